// Package deploy holds deployment examples (systemd unit, environment and
// YAML examples, docker-compose) and the tests that keep them, and the
// Dockerfile at the root of the module, honest. There is no Docker engine
// on the test machines, so the image itself is not built: the tests build
// the binary with the Dockerfile's own command line and check that it is
// static, and check the structure of the Dockerfile and the compose file.
package deploy

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/popbox/popbox/config"
	"github.com/popbox/popbox/internal/testenv"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
	line int
}

// stage is one FROM ... of a multi-stage Dockerfile.
type stage struct {
	from, name string
	ins        []instruction
}

func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		stages []stage
		cur    strings.Builder
		start  int
	)
	flush := func() {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return
		}
		cmd, args, _ := strings.Cut(text, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			s := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			return
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("%s:%d: %s before the first FROM", path, in.line, in.cmd)
			}
			return
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
	}
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue // blank lines and comments (incl. parser directives)
		}
		if cur.Len() > 0 && strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSuffix(trimmed, `\`))
			cur.WriteByte(' ')
			continue
		}
		cur.WriteString(trimmed)
		flush()
	}
	flush()
	return stages
}

// shellWords splits a simple shell command line: blanks separate words,
// double and single quotes group them (no escapes, no expansions).
func shellWords(s string) ([]string, error) {
	var (
		words []string
		cur   strings.Builder
		quote rune
		inW   bool
	)
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, inW = r, true
		case r == ' ' || r == '\t':
			if inW {
				words = append(words, cur.String())
				cur.Reset()
				inW = false
			}
		case r == ';' || r == '&' || r == '|':
			return nil, fmt.Errorf("not a simple command: %q", s)
		default:
			cur.WriteRune(r)
			inW = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inW {
		words = append(words, cur.String())
	}
	return words, nil
}

// buildCommand finds the `go build` of the build stage and returns its
// environment assignments and go arguments (after "go").
func buildCommand(t *testing.T, st stage) (env map[string]string, args []string, argDefaults map[string]string) {
	t.Helper()
	argDefaults = map[string]string{}
	for _, in := range st.ins {
		switch in.cmd {
		case "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			argDefaults[k] = v
		case "RUN":
			if !strings.Contains(in.args, "go build") {
				continue
			}
			words, err := shellWords(in.args)
			if err != nil {
				t.Fatalf("Dockerfile:%d: %v", in.line, err)
			}
			env = map[string]string{}
			for len(words) > 0 && strings.Contains(words[0], "=") {
				k, v, _ := strings.Cut(words[0], "=")
				env[k] = v
				words = words[1:]
			}
			if len(words) < 2 || words[0] != "go" || words[1] != "build" {
				t.Fatalf("Dockerfile:%d: want [VAR=value ...] go build ..., got %q", in.line, in.args)
			}
			return env, words[1:], argDefaults
		}
	}
	t.Fatalf("no RUN ... go build in the build stage")
	return nil, nil, nil
}

// TestStaticBinary builds ./cmd/popbox with the Dockerfile's own command
// line (its environment, flags and ldflags; only the output path and the
// version change) and checks that the result is a static executable
// (distroless/static has no libc and no dynamic loader) whose health
// check command, used by the image's HEALTHCHECK and the compose file,
// works.
func TestStaticBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	root := repoRoot(t)
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d stages, want a build stage and a final stage", len(stages))
	}
	env, args, argDefaults := buildCommand(t, stages[0])
	if env["CGO_ENABLED"] != "0" {
		t.Errorf("Dockerfile build: CGO_ENABLED=%q, want 0 (a static binary)", env["CGO_ENABLED"])
	}
	has := func(w string) bool {
		for _, a := range args {
			if a == w {
				return true
			}
		}
		return false
	}
	if !has("-trimpath") || !has("./cmd/popbox") {
		t.Errorf("Dockerfile build: %q lacks -trimpath or ./cmd/popbox", args)
	}
	const version = "deploy-test"
	out := filepath.Join(t.TempDir(), "popbox")
	var goArgs []string
	ldflagsOK := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" && i+1 < len(args):
			i++
			goArgs = append(goArgs, "-o", out)
			continue
		case a == "-ldflags" && i+1 < len(args):
			i++
			ld := strings.ReplaceAll(args[i], "${VERSION}", version)
			ld = strings.ReplaceAll(ld, "$VERSION", version)
			f := strings.Fields(ld)
			ldflagsOK = len(f) >= 2 && f[0] == "-s" && f[1] == "-w"
			goArgs = append(goArgs, "-ldflags", ld)
			continue
		}
		goArgs = append(goArgs, a)
	}
	if !ldflagsOK {
		t.Errorf(`Dockerfile build: -ldflags should start with "-s -w": %q`, args)
	}
	if _, ok := argDefaults["VERSION"]; !ok {
		t.Errorf("Dockerfile build stage: no ARG VERSION for the version stamp")
	}
	if !has("-o") {
		goArgs = append(goArgs[:1], append([]string{"-o", out}, goArgs[1:]...)...)
	}

	cmd := exec.Command("go", goArgs...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOFLAGS=-buildvcs=false")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(goArgs, " "), err, b)
	}
	t.Logf("go %s: %v", strings.Join(goArgs, " "), time.Since(start).Round(time.Millisecond))

	f, err := elf.Open(out)
	if err != nil {
		t.Fatalf("not an ELF executable: %v", err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC {
		t.Errorf("ELF type %v, want ET_EXEC (a static, non-PIE executable)", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the binary has a PT_INTERP program header (it needs a dynamic loader)")
		}
		if p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary has a PT_DYNAMIC segment")
		}
	}
	if libs, err := f.DynString(elf.DT_NEEDED); err == nil && len(libs) > 0 {
		t.Errorf("the binary needs shared libraries: %v", libs)
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		t.Errorf("the binary imports shared libraries: %v", libs)
	}
	if f.Section(".symtab") != nil {
		t.Errorf("the binary has a symbol table (-s did not apply)")
	}

	if runtime.GOOS != "linux" {
		return // built for linux; cannot run it here
	}
	if got, err := exec.Command(out, "version").Output(); err != nil || strings.TrimSpace(string(got)) != version {
		t.Errorf("popbox version = %q, %v; want %q (the -X stamp)", got, err, version)
	}
	// The health check of the image: exit 0 on a 200 from /healthz, 1 when
	// nothing answers.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	if b, err := exec.Command(out, "health", "--server", srv.URL).CombinedOutput(); err != nil {
		t.Errorf("popbox health against a healthy server: %v\n%s", err, b)
	}
	srv.Close()
	err = exec.Command(out, "health", "--server", srv.URL).Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("popbox health with nothing listening: %v, want exit 1", err)
	}
}

// TestDockerfile checks the image's shape: a golang:1.26 builder, a final
// distroless/static (or scratch) stage with the binary at /popbox, a
// non-root user, the two ports, the health check and the entrypoint.
func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, filepath.Join(repoRoot(t), "Dockerfile"))
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d stages, want a multi-stage build", len(stages))
	}
	if b := stages[0]; !strings.HasPrefix(b.from, "golang:1.26") || b.name == "" {
		t.Errorf("build stage FROM %q AS %q, want golang:1.26 AS <name>", b.from, b.name)
	}
	final := stages[len(stages)-1]
	if !strings.Contains(final.from, "distroless/static") && final.from != "scratch" {
		t.Errorf("final stage FROM %q, want distroless/static or scratch", final.from)
	}
	var (
		user, entry, health string
		exposed             = map[string]bool{}
		copied              bool
	)
	for _, in := range final.ins {
		switch in.cmd {
		case "USER":
			user = in.args
		case "EXPOSE":
			for _, p := range strings.Fields(in.args) {
				exposed[strings.TrimSuffix(p, "/tcp")] = true
			}
		case "ENTRYPOINT":
			entry = in.args
		case "HEALTHCHECK":
			health = in.args
		case "COPY":
			f := strings.Fields(in.args)
			copied = copied || len(f) >= 3 && f[0] == "--from="+stages[0].name && f[len(f)-1] == "/popbox"
		}
	}
	if !copied {
		t.Errorf("final stage does not COPY --from=%s ... /popbox", stages[0].name)
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("final stage USER %q, want a non-root user", user)
	}
	if !exposed["3001"] || !exposed["3002"] {
		t.Errorf("final stage EXPOSE %v, want 3001 and 3002", exposed)
	}
	var ep []string
	if err := json.Unmarshal([]byte(entry), &ep); err != nil || strings.Join(ep, " ") != "/popbox serve" {
		t.Errorf(`ENTRYPOINT %s, want the exec form ["/popbox", "serve"]`, entry)
	}
	if _, cmd, ok := strings.Cut(health, "CMD "); !ok || !strings.Contains(cmd, `"/popbox", "health"`) {
		t.Errorf("HEALTHCHECK %q, want CMD [\"/popbox\", \"health\", ...] (no shell in the image)", health)
	}
}

// composeFile is the part of the compose specification that
// deploy/docker-compose.yml uses; unknown keys are errors, so a misspelt
// key fails the test.
type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string            `yaml:"context"`
		Dockerfile string            `yaml:"dockerfile"`
		Args       map[string]string `yaml:"args"`
	} `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
	Restart         string   `yaml:"restart"`
	StopGracePeriod string   `yaml:"stop_grace_period"`
	ReadOnly        bool     `yaml:"read_only"`
	SecurityOpt     []string `yaml:"security_opt"`
	Ulimits         map[string]struct {
		Soft int `yaml:"soft"`
		Hard int `yaml:"hard"`
	} `yaml:"ulimits"`
}

// TestCompose parses deploy/docker-compose.yml strictly and checks the
// services: Redis 7 with the append-only file, the gateway built from the
// Dockerfile, pointed at that Redis by a configuration the gateway
// accepts, its ports and its health check.
func TestCompose(t *testing.T) {
	root := repoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "deploy", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}

	redis, ok := c.Services["redis"]
	if !ok {
		t.Fatal("no redis service")
	}
	if !strings.HasPrefix(redis.Image, "redis:7") {
		t.Errorf("redis image %q, want redis:7", redis.Image)
	}
	if cmd := strings.Join(redis.Command, " "); !strings.Contains(cmd, "--appendonly yes") {
		t.Errorf("redis command %q: no --appendonly yes", cmd)
	}
	checkHealth(t, "redis", redis)
	for _, v := range redis.Volumes {
		name, _, _ := strings.Cut(v, ":")
		if !strings.HasPrefix(name, ".") && !strings.HasPrefix(name, "/") {
			if _, ok := c.Volumes[name]; !ok {
				t.Errorf("redis volume %q is not declared under volumes", name)
			}
		}
	}

	pb, ok := c.Services["popbox"]
	if !ok {
		t.Fatal("no popbox service")
	}
	if pb.Image == "" && pb.Build == nil {
		t.Error("popbox: neither image nor build")
	}
	if pb.Build != nil {
		df := pb.Build.Dockerfile
		if df == "" {
			df = "Dockerfile"
		}
		ctx := filepath.Join(root, "deploy", pb.Build.Context)
		if _, err := os.Stat(filepath.Join(ctx, df)); err != nil {
			t.Errorf("popbox build: %v", err)
		}
		if _, err := os.Stat(filepath.Join(ctx, "go.mod")); err != nil {
			t.Errorf("popbox build context %q is not the module root: %v", pb.Build.Context, err)
		}
	}
	if d, ok := pb.DependsOn["redis"]; !ok || d.Condition != "service_healthy" {
		t.Errorf("popbox depends_on %+v, want redis: service_healthy", pb.DependsOn)
	}
	url := pb.Environment["POPBOX_REDIS_URL"]
	if !strings.HasPrefix(url, "redis://redis:6379") {
		t.Errorf("POPBOX_REDIS_URL %q, want redis://redis:6379/... (the redis service)", url)
	}
	// Every variable is a setting of popbox serve, and together they load.
	usage := config.Usage()
	for k := range pb.Environment {
		if !strings.Contains(usage, "(env "+k+",") {
			t.Errorf("popbox environment: %s is not a popbox serve setting", k)
		}
	}
	if _, err := config.Load(nil, func(k string) string { return pb.Environment[k] }); err != nil {
		t.Errorf("popbox serve rejects the compose environment: %v", err)
	}
	ports := map[string]bool{}
	for _, p := range pb.Ports {
		parts := strings.Split(p, ":")
		ports[parts[len(parts)-1]] = true
	}
	if !ports["3001"] {
		t.Errorf("popbox ports %v: 3001 is not published", pb.Ports)
	}
	checkHealth(t, "popbox", pb)
	if hc := pb.Healthcheck; hc != nil {
		if len(hc.Test) < 3 || hc.Test[0] != "CMD" || hc.Test[1] != "/popbox" || hc.Test[2] != "health" {
			t.Errorf("popbox healthcheck %q, want [CMD, /popbox, health, ...] (GET /healthz; no shell in the image)", hc.Test)
		}
	}
}

func checkHealth(t *testing.T, name string, s composeService) {
	t.Helper()
	hc := s.Healthcheck
	if hc == nil || len(hc.Test) == 0 {
		t.Errorf("%s: no healthcheck", name)
		return
	}
	for _, d := range []string{hc.Interval, hc.Timeout, hc.StartPeriod} {
		if d == "" {
			continue
		}
		if _, err := time.ParseDuration(d); err != nil {
			t.Errorf("%s healthcheck: %v", name, err)
		}
	}
}
