package redisinfo

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/internal/testenv"
)

// named opens a connection to r named name (CLIENT SETNAME) and keeps it
// open for the test.
func named(t *testing.T, addr, password, name string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password, ClientName: name, PoolSize: 1})
	t.Cleanup(func() { c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestListClientsAndInfo runs against a real redis-server.
func TestListClientsAndInfo(t *testing.T) {
	r := testenv.StartRedis(t, testenv.OwnRedis())
	named(t, r.Addr, "", "popbox:node-a")
	named(t, r.Addr, "", "popbox:node-a")
	named(t, r.Addr, "", "popbox:node-b")
	named(t, r.Addr, "", "other")
	ctx := context.Background()
	cl, err := ListClients(ctx, nil, Target{Addr: r.Addr})
	if err != nil {
		t.Fatal(err)
	}
	// The four above and the one asking.
	if cl.Total != 5 || cl.Popbox != 3 || cl.MaxPerName() != 2 || fmt.Sprint(cl.Names()) != "[popbox:node-a popbox:node-b]" {
		t.Fatalf("%+v", cl)
	}
	before, err := Info(ctx, nil, Target{Addr: r.Addr})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Client()
	defer c.Close()
	for i := 0; i < 10; i++ {
		c.LPush(ctx, "k", i)
	}
	after, err := Info(ctx, nil, Target{Addr: r.Addr})
	if err != nil {
		t.Fatal(err)
	}
	if after.CPU <= 0 || after.Commands["lpush"].Calls-before.Commands["lpush"].Calls != 10 || after.Commands["lpush"].Usec <= 0 {
		t.Fatalf("before %+v, after %+v", before, after)
	}
}

func TestParseCommandStats(t *testing.T) {
	got := ParseCommandStats(map[string]string{
		"cmdstat_evalsha": "calls=10,usec=500,usec_per_call=50.00,rejected_calls=0",
		"cmdstat_lpop":    "calls=20,usec=40",
		"errorstat_ERR":   "count=1",
	})
	if len(got) != 2 || got["evalsha"] != (CmdStat{10, 500}) || got["lpop"] != (CmdStat{20, 40}) {
		t.Fatalf("%+v", got)
	}
}

func TestAuth(t *testing.T) {
	r := testenv.StartRedis(t, testenv.OwnRedis())
	addr := r.Addr
	c := r.Client()
	err := c.ConfigSet(context.Background(), "requirepass", "s3cret").Err()
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ListClients(context.Background(), nil, Target{Addr: addr}); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("without password: %v", err)
	}
	tg, err := ParseTarget("redis://:s3cret@" + addr + "/0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ListClients(context.Background(), nil, tg); err != nil {
		t.Fatal(err)
	}
	tg.Password = "wrong"
	if _, err := ListClients(context.Background(), nil, tg); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestParseTarget(t *testing.T) {
	for in, want := range map[string]Target{
		"127.0.0.1:6379":               {Addr: "127.0.0.1:6379"},
		"redis://127.0.0.1":            {Addr: "127.0.0.1:6379"},
		"redis://u:p@127.0.0.1:7000/3": {Addr: "127.0.0.1:7000", Username: "u", Password: "p"},
	} {
		got, err := ParseTarget(in)
		if err != nil || got != want {
			t.Errorf("%s: %+v %v", in, got, err)
		}
	}
	for _, bad := range []string{"localhost", "rediss://127.0.0.1:6380", "http://x:1"} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("%s: want an error", bad)
		}
	}
}
