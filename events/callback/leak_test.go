package callback_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// goroutine a component starts must be owned and waited for.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
