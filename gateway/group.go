package gateway

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/hub/delivery"
	"github.com/popbox/popbox/request"
)

func groupParam(c echo.Context) (string, error) {
	name, err := pathParam(c, "name")
	if err == nil {
		err = request.ValidQueueID(name)
	}
	if err != nil {
		_ = errorsJSON(c, http.StatusBadRequest, request.MsgInvalidGroupName)
		return "", errHandled
	}
	return name, nil
}

// createGroup is POST /group: the queues are added to the group's members.
func (s *Server) createGroup(c echo.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	name, queues, errs := request.ParseGroupCreate(body)
	if len(errs) > 0 {
		return badBody(c, errs...)
	}
	if err := s.svc.AddToGroup(c.Request().Context(), namespace(c), name, queues); err != nil {
		return s.storeError(c, err)
	}
	return c.JSON(http.StatusOK, map[string]string{"ok": "group stored"})
}

// getGroup is GET /group/{name}.
func (s *Server) getGroup(c echo.Context) error {
	name, err := groupParam(c)
	if err != nil {
		return err
	}
	m, err := s.svc.Group(c.Request().Context(), namespace(c), name)
	if err != nil {
		return s.storeError(c, err)
	}
	return c.JSON(http.StatusOK, map[string]any{"name": name, "queues": m})
}

// modifyGroup is PUT /group/{name}.
func (s *Server) modifyGroup(c echo.Context) error {
	name, err := groupParam(c)
	if err != nil {
		return err
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	add, remove, errs := request.ParseGroupModify(body)
	if len(errs) > 0 {
		return badBody(c, errs...)
	}
	err = s.svc.ModifyGroup(c.Request().Context(), namespace(c), name, add, remove)
	if errors.Is(err, delivery.ErrNotFound) {
		return errorsJSON(c, http.StatusBadRequest, name+" does not exist")
	}
	if err != nil {
		return s.storeError(c, err)
	}
	return c.JSON(http.StatusOK, map[string]string{"ok": "group modified"})
}

// deleteGroup is DELETE /group/{name}.
func (s *Server) deleteGroup(c echo.Context) error {
	name, err := groupParam(c)
	if err != nil {
		return err
	}
	if err := s.svc.DeleteGroup(c.Request().Context(), namespace(c), name); err != nil {
		return s.storeError(c, err)
	}
	return c.JSON(http.StatusOK, map[string]string{"ok": "Group " + name + " removed"})
}
