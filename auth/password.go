package auth

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/bcrypt"
)

// MaxPasswordLen is the longest password accepted, in bytes. bcrypt only
// looks at the first 72 bytes of a password, so a longer one is refused when
// hashing and never matches when checking (otherwise any suffix of a
// 72-byte password would pass).
const MaxPasswordLen = 72

// ErrEmptyPassword is returned by HashPassword for an empty password.
var ErrEmptyPassword = errors.New("auth: empty password")

// ErrPasswordTooLong is returned by HashPassword for a password longer than
// MaxPasswordLen bytes.
var ErrPasswordTooLong = fmt.Errorf("auth: password longer than %d bytes", MaxPasswordLen)

// DefaultHashCost is the bcrypt cost used unless WithCost or WithHashCost
// says otherwise (bcrypt.DefaultCost).
const DefaultHashCost = bcrypt.DefaultCost

// HashOption changes how HashPassword hashes.
type HashOption func(*hashConfig)

type hashConfig struct {
	cost int
}

// WithCost sets the bcrypt cost (bcrypt.MinCost..bcrypt.MaxCost; default
// bcrypt.DefaultCost). Tests use bcrypt.MinCost to stay fast; the
// configuration bounds it further (config: bcrypt-cost).
func WithCost(cost int) HashOption {
	return func(c *hashConfig) { c.cost = cost }
}

// HashPassword returns the bcrypt hash of pw, to be stored for a secure box.
// The password itself is never stored. It fails for an empty password, a
// password longer than MaxPasswordLen bytes and a cost outside bcrypt's range.
func HashPassword(pw string, opts ...HashOption) (string, error) {
	cfg := hashConfig{cost: DefaultHashCost}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case pw == "":
		return "", ErrEmptyPassword
	case len(pw) > MaxPasswordLen:
		return "", ErrPasswordTooLong
	case cfg.cost < bcrypt.MinCost || cfg.cost > bcrypt.MaxCost:
		return "", fmt.Errorf("auth: hash password: %w", bcrypt.InvalidCostError(cfg.cost))
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), cfg.cost)
	if err != nil {
		return "", fmt.Errorf("auth: hash password: %w", err)
	}
	return string(h), nil
}
