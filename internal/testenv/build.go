package testenv

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// cachedBuild returns the path of a binary called name-<key> in the test
// binary cache (os.UserCacheDir()/popbox-test-bin), running build(tmpPath)
// to make it when it is not there yet. Concurrent test processes (go test
// runs packages in parallel) take a file lock, so only one of them builds
// and the others reuse the result. built reports whether this call built it.
func cachedBuild(name, key string, build func(out string) error) (path string, built bool, err error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "popbox-test-bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, err
	}
	bin := filepath.Join(dir, name+"-"+key)
	if _, err := os.Stat(bin); err == nil {
		return bin, false, nil
	}
	lock, err := os.OpenFile(filepath.Join(dir, name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", false, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", false, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	if _, err := os.Stat(bin); err == nil {
		return bin, false, nil // another process built it meanwhile
	}
	tmp := bin + ".tmp" + fmt.Sprint(os.Getpid())
	if err := build(tmp); err != nil {
		_ = os.Remove(tmp)
		return "", false, err
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", false, err
	}
	return bin, true, nil
}

// goCommand returns an exec.Cmd running the go tool in dir with a clean
// GOFLAGS/GOWORK.
func goCommand(dir string, args ...string) *exec.Cmd {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, args...)
	cmd.Dir = dir
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "GOFLAGS=") || strings.HasPrefix(kv, "GOWORK=")
	})
	cmd.Env = append(env, "GOFLAGS=-buildvcs=false -mod=readonly", "GOWORK=off")
	return cmd
}

// hashSources hashes the Go sources (not tests), go.mod and go.sum under
// root, skipping the folders named in skip (relative to root) and testdata,
// plus the Go version and target and extra, into a short hex key.
func hashSources(root string, skip []string, extra string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s %s/%s %s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH, extra)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules" || slices.Contains(skip, rel)) {
				return filepath.SkipDir
			}
			return nil
		}
		name := d.Name()
		if !(strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go")) && name != "go.mod" && name != "go.sum" &&
			!strings.Contains(rel, "web"+string(filepath.Separator)) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %d\n", rel, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)[:8]), nil
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
