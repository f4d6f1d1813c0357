package gateway

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/hub/delivery"
	"github.com/popbox/popbox/request"
)

// msgBoxPlainPort is the answer to POST /queue on the plain port.
const msgBoxPlainPort = "secure boxes can only be created on the secure (TLS) port"

// createBox is POST /queue (API.md 1.5): on the secure port it creates the
// secure box {"queue", "user", "password"} in the request's namespace
// ([<org>:]SEC:), storing a bcrypt hash of the password, never the
// password. 200 {"ok": true}; an existing box: 403 {"errors": ["Error:
// SEC:q1 exists"]}; a bad body: 400 listing the problems.
//
// On the plain port the route answers 400 {"errors": [msgBoxPlainPort]}
// without reading the body: a box created there would have no protection
// (the plain namespace has no boxes) and its password would cross the
// network in clear.
func (s *Server) createBox(c echo.Context) error {
	if !isSecure(c) {
		return errorsJSON(c, http.StatusBadRequest, msgBoxPlainPort)
	}
	b, err := parseBody(s, c, request.ParseSecureBox)
	if err != nil {
		return err
	}
	hash, err := s.sec.boxes.Hash(b.Password)
	if err != nil {
		// Only empty or over-long passwords fail, which ParseSecureBox
		// already refused; the error names neither.
		return errorsJSON(c, http.StatusBadRequest, err.Error())
	}
	q := namespace(c).Queue(b.Queue)
	switch err := s.svc.CreateBox(c.Request().Context(), q, b.User, hash); {
	case errors.Is(err, delivery.ErrExists):
		return errorsJSON(c, http.StatusForbidden, "Error: "+q.String()+" exists")
	case err != nil:
		return s.storeError(c, err)
	}
	return c.JSON(http.StatusOK, map[string]bool{"ok": true})
}
