package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/popbox/popbox/auth"
	"github.com/popbox/popbox/hub/delivery"
)

// DeployInfo is the JSON answer of GET /.
type DeployInfo struct {
	Name          string           `json:"name"`
	Version       string           `json:"version"`
	Node          string           `json:"node"`
	StartedAt     time.Time        `json:"startedAt"`
	UptimeSeconds int64            `json:"uptimeSeconds"`
	Redis         RedisInfo        `json:"redis"`
	Connections   map[string]int64 `json:"connections"`
	Messages      map[string]int64 `json:"messages"`
	History       bool             `json:"history"`
}

// RedisInfo describes the Redis deployment behind the gateway.
type RedisInfo struct {
	Mode string `json:"mode"`
	// Nodes (addresses, versions, memory) are shown only to the
	// administrator when one is configured (API.md 1.7).
	Nodes []delivery.NodeInfo `json:"nodes,omitempty"`
}

// deployInfo is GET / (API.md 1.7); a browser is sent to the dashboard.
func (s *Server) deployInfo(c echo.Context) error {
	if wantsHTML(c) {
		return c.Redirect(http.StatusFound, "/ui/")
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	info := DeployInfo{
		Name:          "popbox",
		Version:       s.opts.Version,
		Node:          s.opts.Node,
		StartedAt:     s.started.UTC(),
		UptimeSeconds: int64(time.Since(s.started).Seconds()),
		Redis:         RedisInfo{Mode: s.opts.RedisMode},
		Connections:   map[string]int64{},
		Messages: map[string]int64{
			"provisioned": int64(counterValue(s.m.delivery.Provisioned)),
			"delivered":   int64(s.sumDelivered()),
			"requeued":    int64(counterValue(s.m.delivery.Requeued)),
			"expired":     int64(counterValue(s.m.delivery.Expired)),
		},
		History: s.opts.History != nil,
	}
	if s.adminView(c) {
		info.Redis.Nodes = s.svc.Topology(ctx)
	}
	for _, t := range delivery.Transports {
		info.Connections[t] = int64(gaugeValue(s.m.Connections.WithLabelValues(t)))
	}
	if s.opts.RedisMode == "embedded" {
		for i := range info.Redis.Nodes {
			info.Redis.Nodes[i].Role = "embedded (in-memory, not persisted)"
		}
	}
	for i := range info.Redis.Nodes {
		info.Redis.Nodes[i].Addr = redactAddr(info.Redis.Nodes[i].Addr)
	}
	return c.JSON(http.StatusOK, info)
}

func (s *Server) sumDelivered() float64 {
	var n float64
	for _, t := range delivery.Transports {
		n += counterValue(s.m.delivery.Delivered.WithLabelValues(t))
	}
	return n
}

func redactAddr(a string) string {
	if u, err := url.Parse(a); err == nil && u.User != nil {
		u.User = nil
		return u.String()
	}
	return a
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil || m.Counter == nil {
		return 0
	}
	return m.Counter.GetValue()
}

func gaugeValue(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil || m.Gauge == nil {
		return 0
	}
	return m.Gauge.GetValue()
}

// adminView tells whether the request may see the Redis deployment's
// addresses, versions and memory: when no administrator is configured,
// everyone (API.md 1.7); else only the administrator's BasicAuth
// credentials (refused ones count towards the client's failure limit).
func (s *Server) adminView(c echo.Context) bool {
	if !s.sec.adminOn {
		return true
	}
	user, pass, ok := auth.ParseBasic(c.Request().Header.Get(echo.HeaderAuthorization))
	if !ok || s.failureBlocked(c) != nil {
		return false
	}
	if s.sec.isAdmin(user, pass) {
		return true
	}
	s.authLog(c, "", "wrong admin credentials")
	_ = s.failed(c, &denied{basic: true})
	return false
}

// healthz is GET /healthz: the process is up.
func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"ok": true})
}

// readyz is GET /readyz: Redis answers.
func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	if err := s.svc.Ping(ctx); err != nil {
		s.log.LogAttrs(c.Request().Context(), slog.LevelWarn, "readiness: redis unreachable", slog.String("id", requestID(c)), slog.Any("err", err))
		if s.adminView(c) {
			return errorsJSON(c, http.StatusServiceUnavailable, "redis unreachable: "+err.Error())
		}
		return errorsJSON(c, http.StatusServiceUnavailable, "redis unreachable (request id "+requestID(c)+")")
	}
	return c.JSON(http.StatusOK, map[string]any{"ok": true})
}

func (s *Server) metricsHandler() echo.HandlerFunc {
	h := promhttp.HandlerFor(s.m.Registry, promhttp.HandlerOpts{})
	return echo.WrapHandler(h)
}

// escapeSegment escapes a queue id for use as one URL path segment.
func escapeSegment(id string) string { return url.PathEscape(id) }
