package deploy

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/popbox/popbox/internal/testenv"
)

// grafanaDashboard is what the test reads of deploy/grafana/popbox.json.
type grafanaDashboard struct {
	Title  string         `json:"title"`
	UID    string         `json:"uid"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaPanel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource map[string]any `json:"datasource"`
	GridPos    map[string]int `json:"gridPos"`
	Targets    []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// alertRules is what the test reads of deploy/prometheus/alerts.yml.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// readMonitoring parses the dashboard and the alert rules and returns their
// PromQL expressions, each named by where it is.
func readMonitoring(t *testing.T) map[string]string {
	t.Helper()
	root := repoRoot(t)
	exprs := map[string]string{}

	b, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "popbox.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash grafanaDashboard
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("deploy/grafana/popbox.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("deploy/grafana/popbox.json: title %q, uid %q, %d panels", dash.Title, dash.UID, len(dash.Panels))
	}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("dashboard: panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Title == "" || p.GridPos["w"] == 0 || p.GridPos["h"] == 0 {
			t.Errorf("dashboard: panel %d has no title or size", p.ID)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 || p.Datasource == nil {
			t.Errorf("dashboard: panel %q has no query or no data source", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("dashboard: panel %q: a query without expr, or a missing or repeated refId %q", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			exprs["dashboard panel "+p.Title+" "+tg.RefID] = tg.Expr
		}
	}

	b, err = os.ReadFile(filepath.Join(root, "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules alertRules
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("deploy/prometheus/alerts.yml: %v", err)
	}
	if len(rules.Groups) == 0 {
		t.Fatal("deploy/prometheus/alerts.yml: no rule group")
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %q: needs alert, expr, a severity label and a summary", r.Alert)
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("alert %q: for: %v", r.Alert, err)
				}
			}
			exprs["alert "+r.Alert] = r.Expr
		}
	}
	return exprs
}

var (
	// metricRef is a metric name in a PromQL expression, with its label
	// matchers when it has some.
	metricRef = regexp.MustCompile(`\b((?:popbox|process|go)_[A-Za-z0-9_]+)\s*(\{[^}]*\})?`)
	matcher   = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)`)
	grouping  = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// scrapeNames reads a gateway's /metrics and returns every series name
// (with the _bucket, _sum and _count series of histograms and summaries)
// and the label names each has.
func scrapeNames(t *testing.T, base string) map[string]map[string]bool {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	for name, f := range fams {
		labels := map[string]bool{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = true
			}
		}
		out[name] = labels
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY:
			for _, suf := range []string{"_sum", "_count"} {
				out[name+suf] = labels
			}
			if f.GetType() == dto.MetricType_HISTOGRAM {
				bl := map[string]bool{"le": true}
				for l := range labels {
					bl[l] = true
				}
				out[name+"_bucket"] = bl
			}
		}
	}
	return out
}

// TestMonitoringMetricsExported: the Grafana dashboard and the Prometheus
// alerts parse, and every metric (and label) their queries use is exported
// by a real gateway's /metrics.
func TestMonitoringMetricsExported(t *testing.T) {
	exprs := readMonitoring(t)
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL())
	// Exercise the gateway so that request-labelled series exist too.
	resp, err := http.Post(g.URL+"/trans", "application/json",
		strings.NewReader(`{"payload":"m","priority":"H","queue":[{"id":"monitoring"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp, err = http.Post(g.URL+"/queue/monitoring/pop?timeout=1", "", nil); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	exported := scrapeNames(t, g.URL)

	used := map[string]bool{}
	where := make([]string, 0, len(exprs))
	for w := range exprs {
		where = append(where, w)
	}
	sort.Strings(where)
	for _, w := range where {
		expr := exprs[w]
		inExpr := map[string]bool{"instance": true, "job": true} // added by Prometheus at scrape
		refs := metricRef.FindAllStringSubmatch(expr, -1)
		if len(refs) == 0 {
			t.Errorf("%s: no PopBox metric in %q", w, expr)
		}
		for _, m := range refs {
			name := m[1]
			used[name] = true
			labels, ok := exported[name]
			if !ok {
				t.Errorf("%s: %s is not exported by /metrics", w, name)
				continue
			}
			for l := range labels {
				inExpr[l] = true
			}
			for _, lm := range matcher.FindAllStringSubmatch(m[2], -1) {
				if !labels[lm[1]] && lm[1] != "instance" && lm[1] != "job" {
					t.Errorf("%s: %s has no label %q", w, name, lm[1])
				}
			}
		}
		for _, gm := range grouping.FindAllStringSubmatch(expr, -1) {
			for _, l := range strings.Split(gm[1], ",") {
				if l = strings.TrimSpace(l); l != "" && !inExpr[l] {
					t.Errorf("%s: groups by %q, a label none of its metrics has", w, l)
				}
			}
		}
	}
	// What issue 15 asks the dashboard and the alerts to show.
	for _, name := range []string{
		"popbox_connections", "popbox_messages_provisioned_total", "popbox_messages_delivered_total",
		"popbox_pop_duration_seconds_bucket", "popbox_delivery_write_seconds_bucket",
		"popbox_slow_consumer_disconnects_total", "popbox_messages_handed_back_total", "popbox_redis_up",
		"popbox_events_dropped_total", "popbox_auth_failures_total", "popbox_connection_limit_used",
	} {
		if !used[name] {
			t.Errorf("neither the dashboard nor the alerts use %s", name)
		}
	}
}
