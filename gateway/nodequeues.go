package gateway

import (
	"cmp"
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/auth"
)

// maxNodeQueues bounds the answer of GET /node/queues (the busiest first).
const maxNodeQueues = 1000

// NodeQueue is one queue this node serves consumers of.
type NodeQueue struct {
	Queue   string `json:"queue"`
	Org     string `json:"org,omitempty"`
	Secure  bool   `json:"secure"`
	Waiters int    `json:"waiters"`
}

// nodeQueues is GET /node/queues: the queues with consumers waiting on this
// node now (long polls and streams of every transport), with their waiter
// counts, most waiters first, at most maxNodeQueues ("truncated" says when
// there were more). With an administrator configured only the
// administrator's Basic credentials see it: queue names can be private.
func (s *Server) nodeQueues(c echo.Context) error {
	if s.sec.adminOn {
		user, pass, ok := auth.ParseBasic(c.Request().Header.Get(echo.HeaderAuthorization))
		if !ok || !s.sec.isAdmin(user, pass) {
			s.writeDenied(c, &denied{basic: true})
			return nil
		}
	}
	waiting := s.svc.Waiting()
	list := make([]NodeQueue, 0, len(waiting))
	for q, n := range waiting {
		list = append(list, NodeQueue{Queue: q.ID, Org: q.Org(), Secure: q.Secure(), Waiters: n})
	}
	slices.SortFunc(list, func(a, b NodeQueue) int {
		return cmp.Or(cmp.Compare(b.Waiters, a.Waiters), cmp.Compare(a.Org, b.Org), cmp.Compare(a.Queue, b.Queue),
			cmp.Compare(boolInt(a.Secure), boolInt(b.Secure)))
	})
	truncated := len(list) > maxNodeQueues
	if truncated {
		list = list[:maxNodeQueues]
	}
	return c.JSON(http.StatusOK, map[string]any{"ok": true, "node": s.opts.Node, "queues": list, "truncated": truncated})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
