package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
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
	proc     running
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
		if _, err = cmd.StdinPipe(); err != nil {
			logf.Close()
			return err
		}
	}
	done, err := startLogged(cmd, logf)
	if err != nil {
		return err
	}
	m.proc.set(cmd, done)
	if err := waitMongo(m.URI, done, 30*time.Second); err != nil {
		m.proc.end(os.Kill, 10*time.Second)
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

// Pid is the server's process id; 0 for an external server.
func (m *Mongo) Pid() int { return m.proc.pid() }

// Stop shuts the server down (SIGINT) and waits for it (no-op for an
// external server).
func (m *Mongo) Stop() {
	if m.external {
		return
	}
	m.proc.end(os.Interrupt, 10*time.Second)
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
