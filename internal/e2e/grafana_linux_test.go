package e2e

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// eventSeries appear only once their event happened (a retry, a 429, a
// circuit change, a refusal), which the Prometheus test does not cause;
// pkg/agent/metrics's unit tests check their names.
var eventSeries = map[string]bool{
	"hms_retries_total": true, "hms_retry_budget_exhausted_total": true, "hms_rate_limited_total": true,
	"hms_rate_limit_queue_seconds_bucket": true, "hms_circuit_state": true, "hms_denied_total": true,
}

// metricName finds the metric names of a query once labelClause has
// removed the label names and matchers.
var (
	metricName  = regexp.MustCompile(`\b(istio|hms|grpc|process)_[a-z0-9_]+`)
	labelClause = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)|\{[^}]*\}`)
)

// checkDashboard runs every query of deploy/grafana's dashboard through
// Prometheus (valid PromQL) and checks that each metric it names is one
// the mesh exports.
func checkDashboard(t *testing.T, prom *promProc, tcpChecked bool) {
	b, err := os.ReadFile("../../deploy/grafana/hms-node-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	have := map[string]bool{}
	for _, n := range prom.labelValues(t, "__name__") {
		have[n] = true
	}
	vars := strings.NewReplacer("$__rate_interval", "10s", "$service", ".*", "$agent_job", "hms-agent", "$control_job", "hms-control")
	queries := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			queries++
			expr := vars.Replace(tg.Expr)
			prom.query(t, expr) // fails the test on invalid PromQL
			for _, name := range metricName.FindAllString(labelClause.ReplaceAllString(expr, ""), -1) {
				tcpPending := !tcpChecked && strings.HasPrefix(name, "istio_tcp_")
				if !have[name] && !eventSeries[name] && !tcpPending {
					t.Errorf("panel %q uses %s, which no target exports", p.Title, name)
				}
			}
		}
	}
	if queries < 20 {
		t.Fatalf("the dashboard has %d queries", queries)
	}
	t.Logf("%d dashboard queries valid; every metric they name is exported", queries)
}

// labelValues lists a label's values through Prometheus's HTTP API.
func (p *promProc) labelValues(t *testing.T, label string) []string {
	t.Helper()
	var r struct {
		Data []string `json:"data"`
	}
	p.getJSON(t, "/api/v1/label/"+label+"/values", &r)
	return r.Data
}
