package testenv

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
)

// Mongo is a MongoDB-wire server owned by one test: a mongod process when
// one is on PATH, else the embedded FerretDB (SQLite backend) built from
// tools/ferretdb, or an external server named by POPBOX_TEST_MONGO_URI.
type Mongo struct {
	URI  string // mongodb://host:port/
	DB   string // database reserved for this test (dropped first on an external server)
	Kind string // "mongod", "ferretdb" or "external"

	addr     string
	dir      string
	bin      string
	mu       sync.Mutex
	cmd      *exec.Cmd
	stdin    io.Closer
	done     <-chan struct{}
	external bool
}

// MongoOption changes how a test MongoDB is started.
type MongoOption func(*mongoOpts)

type mongoOpts struct{ forceOwn bool }

// OwnMongo forces a private server even when POPBOX_TEST_MONGO_URI is set
// (for tests that stop or restart the server).
func OwnMongo() MongoOption { return func(o *mongoOpts) { o.forceOwn = true } }

// StartMongo starts a private MongoDB-wire server on a free loopback port
// with its data in a temporary directory, waits until it answers a ping,
// and stops it when the test ends. It runs mongod when it is on PATH and
// otherwise the FerretDB binary of tools/ferretdb, built once into
// os.UserCacheDir()/popbox-test-bin and reused while tools/ferretdb is
// unchanged. When POPBOX_TEST_MONGO_URI is set (and no option forces a
// private server) that server is used instead and the test's database is
// dropped first: pointing the variable at a server gives the tests leave
// to do so.
func StartMongo(t testing.TB, opts ...MongoOption) *Mongo {
	t.Helper()
	var o mongoOpts
	for _, fn := range opts {
		fn(&o)
	}
	db := mongoTestDBName(t.Name())
	if u := os.Getenv("POPBOX_TEST_MONGO_URI"); u != "" && !o.forceOwn {
		m := &Mongo{URI: u, DB: db, Kind: "external", external: true}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := mongo.Connect(options.Client().ApplyURI(u).SetServerSelectionTimeout(5 * time.Second))
		if err != nil {
			t.Fatalf("POPBOX_TEST_MONGO_URI: %v", err)
		}
		defer func() { _ = c.Disconnect(ctx) }()
		if err := c.Database(db).Drop(ctx); err != nil {
			t.Fatalf("drop test database %s on external mongo: %v", db, err)
		}
		return m
	}

	m := &Mongo{DB: db, dir: t.TempDir()}
	if bin, err := exec.LookPath("mongod"); err == nil {
		m.bin, m.Kind = bin, "mongod"
	} else {
		start := time.Now()
		bin, built, err := FerretDBBinary()
		if err != nil {
			t.Fatalf("no mongod on PATH and FerretDB unavailable: %v", err)
		}
		if built {
			t.Logf("built %s in %v", bin, time.Since(start).Round(time.Millisecond))
		}
		m.bin, m.Kind = bin, "ferretdb"
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		m.addr = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		m.URI = "mongodb://" + m.addr + "/"
		if lastErr = m.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("start %s: %v", m.Kind, lastErr)
	}
	t.Cleanup(m.Stop)
	return m
}

// mongoTestDBName turns a test name into a valid, unique-enough database name.
func mongoTestDBName(name string) string {
	sum := sha256.Sum256([]byte(name))
	clean := regexp.MustCompile(`[^A-Za-z0-9_]+`).ReplaceAllString(name, "_")
	if len(clean) > 40 {
		clean = clean[:40]
	}
	return "t_" + clean + "_" + hex.EncodeToString(sum[:4])
}

func (m *Mongo) start() error {
	_, port, _ := net.SplitHostPort(m.addr)
	logf, err := os.OpenFile(filepath.Join(m.dir, m.Kind+"-"+port+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	var cmd *exec.Cmd
	var stdin io.WriteCloser
	switch m.Kind {
	case "mongod":
		dbpath := filepath.Join(m.dir, "db")
		if err := os.MkdirAll(dbpath, 0o755); err != nil {
			logf.Close()
			return err
		}
		cmd = exec.Command(m.bin, "--port", port, "--bind_ip", "127.0.0.1", "--dbpath", dbpath, "--quiet", "--nounixsocket")
	default:
		cmd = exec.Command(m.bin, "-listen", m.addr, "-dir", filepath.Join(m.dir, "data"), "-exit-on-stdin-eof")
		// The server stops when this pipe closes, also when the test
		// process dies without running its cleanups.
		if stdin, err = cmd.StdinPipe(); err != nil {
			logf.Close()
			return err
		}
	}
	done, err := startLogged(cmd, logf)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.cmd, m.done, m.stdin = cmd, done, stdin
	m.mu.Unlock()
	if err := waitMongo(m.URI, done, 30*time.Second); err != nil {
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%w (log: %s)", err, mongoLogTail(filepath.Join(m.dir, m.Kind+"-"+port+".log")))
	}
	return nil
}

// waitMongo pings uri until it answers, the process ends or the timeout
// passes.
func waitMongo(uri string, exited <-chan struct{}, timeout time.Duration) error {
	c, err := mongo.Connect(options.Client().ApplyURI(uri).
		SetServerSelectionTimeout(300 * time.Millisecond).SetConnectTimeout(300 * time.Millisecond))
	if err != nil {
		return err
	}
	defer func() { _ = c.Disconnect(context.Background()) }()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err = c.Ping(ctx, readpref.Primary())
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("server exited before answering")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mongo at %s not ready: %w", uri, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mongoLogTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// Client returns a driver client for the server, disconnected when the
// test ends.
func (m *Mongo) Client(t testing.TB) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(m.URI).SetServerSelectionTimeout(5 * time.Second))
	if err != nil {
		t.Fatalf("mongo client: %v", err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

// Stop shuts the server down and waits for it (no-op for an external
// server).
func (m *Mongo) Stop() {
	if m.external {
		return
	}
	m.mu.Lock()
	cmd, done, stdin := m.cmd, m.done, m.stdin
	m.cmd, m.stdin = nil, nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	if stdin != nil {
		_ = stdin.Close() // the FerretDB wrapper also exits when its stdin closes
	}
	endProcess(cmd, done, os.Interrupt, 10*time.Second)
}

// Restart stops the server and starts it again on the same port and data
// directory, so what was written before survives.
func (m *Mongo) Restart(t testing.TB) {
	t.Helper()
	if m.external {
		t.Fatal("cannot restart an external test mongo (use OwnMongo)")
	}
	m.Stop()
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = m.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("restart %s: %v", m.Kind, err)
}

var ferretBuild struct {
	once  sync.Once
	path  string
	built bool
	err   error
}

// FerretDBBinary returns the path of the tools/ferretdb binary, building it
// once per process into os.UserCacheDir()/popbox-test-bin under a name
// keyed by the hash of the tool's sources, go.mod and go.sum (and the Go
// version), so later test runs reuse it. built reports whether this call
// compiled it. Concurrent test processes take a file lock so only one of
// them builds.
func FerretDBBinary() (path string, built bool, err error) {
	ferretBuild.once.Do(func() {
		ferretBuild.path, ferretBuild.built, ferretBuild.err = buildFerretDB()
	})
	return ferretBuild.path, ferretBuild.built, ferretBuild.err
}

func buildFerretDB() (string, bool, error) {
	root, err := popboxModuleRoot()
	if err != nil {
		return "", false, err
	}
	src := filepath.Join(root, "tools", "ferretdb")
	key, err := hashSources(src, nil, "ferretdb_no_postgresql")
	if err != nil {
		return "", false, fmt.Errorf("hash %s: %w", src, err)
	}
	return cachedBuild("ferretdb", key, func(out string) error {
		cmd := goCommand(src, "build", "-trimpath", "-tags", "ferretdb_no_postgresql", "-o", out, ".")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build tools/ferretdb: %w\n%s", err, b)
		}
		return nil
	})
}

// popboxModuleRoot walks up from the working directory to the directory whose
// go.mod declares module github.com/popbox/popbox.
func popboxModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				fields := strings.Fields(sc.Text())
				if len(fields) == 2 && fields[0] == "module" {
					if strings.Trim(fields[1], `"`) == "github.com/popbox/popbox" {
						f.Close()
						return dir, nil
					}
					break
				}
			}
			f.Close()
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of module github.com/popbox/popbox above the working directory")
		}
		dir = parent
	}
}
