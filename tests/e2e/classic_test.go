package e2e

import (
	"encoding/json"
	"sort"
	"testing"
)

// TestClassicAPI checks API.md sections 1.1–1.4 over real HTTP against one
// gateway process and one redis-server shared by every subtest (each uses
// queues of its own); the subtests are grouped by section, one file each
// (1.1 and 1.2, POST /trans and /trans/{tid}, share classic_provision_test.go).
func TestClassicAPI(t *testing.T) {
	t.Parallel()
	_, n := startRedisNode(t)
	classicProvision(t, n)
	classicTransactions(t, n)
	classicPop(t, n)
	classicQueues(t, n)
	classicRoutes(t, n)
	classicGroups(t, n)
}

func sorted(s ...string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// diffJSON compares want (any JSON-marshalable value) with a decoded value.
func diffJSON(t testing.TB, want, got any) string {
	t.Helper()
	w, _ := json.Marshal(normal(t, want))
	g, _ := json.Marshal(got)
	if string(w) == string(g) {
		return ""
	}
	return "-" + string(w) + "\n+" + string(g)
}
