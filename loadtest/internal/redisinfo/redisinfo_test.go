package redisinfo

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
)

// fakeRedis answers CLIENT LIST and INFO like Redis 7 over RESP2.
func fakeRedis(t *testing.T, password string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serve(c, password)
		}
	}()
	return l.Addr().String()
}

func readCommand(br *bufio.Reader) ([]string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
	var args []string
	for i := 0; i < n; i++ {
		l, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, _ := strconv.Atoi(strings.TrimSpace(l[1:]))
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, err
		}
		args = append(args, string(buf[:size]))
	}
	return args, nil
}

func bulk(s string) string { return fmt.Sprintf("$%d\r\n%s\r\n", len(s), s) }

func serve(c net.Conn, password string) {
	defer c.Close()
	br := bufio.NewReader(c)
	authed := password == ""
	for {
		args, err := readCommand(br)
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.Join(args, " "))
		switch {
		case strings.HasPrefix(cmd, "AUTH"):
			if args[len(args)-1] == password {
				authed = true
				io.WriteString(c, "+OK\r\n")
			} else {
				io.WriteString(c, "-WRONGPASS invalid password\r\n")
			}
		case !authed:
			io.WriteString(c, "-NOAUTH Authentication required.\r\n")
		case cmd == "CLIENT LIST":
			io.WriteString(c, bulk("id=3 addr=127.0.0.1:5 name=popbox:node-a cmd=evalsha\n"+
				"id=4 addr=127.0.0.1:6 name=popbox:node-a cmd=ping\n"+
				"id=5 addr=127.0.0.1:7 name=popbox:node-b cmd=subscribe\n"+
				"id=6 addr=127.0.0.1:8 name= cmd=client|list\n"+
				"id=7 addr=127.0.0.1:9 name=other cmd=get\n"))
		case cmd == "INFO CPU":
			io.WriteString(c, bulk("# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\n"))
		case cmd == "INFO COMMANDSTATS":
			io.WriteString(c, bulk("# Commandstats\r\ncmdstat_evalsha:calls=10,usec=500,usec_per_call=50.00,rejected_calls=0\r\ncmdstat_lpop:calls=20,usec=40\r\n"))
		default:
			io.WriteString(c, "-ERR unknown command\r\n")
		}
	}
}

func TestListClientsAndInfo(t *testing.T) {
	addr := fakeRedis(t, "")
	cl, err := ListClients(context.Background(), nil, Target{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	if cl.Total != 5 || cl.Popbox != 3 || cl.MaxPerName() != 2 || fmt.Sprint(cl.Names()) != "[popbox:node-a popbox:node-b]" {
		t.Fatalf("%+v", cl)
	}
	s, err := Info(context.Background(), nil, Target{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	if s.CPU != 3.75 || s.Commands["evalsha"] != (CmdStat{10, 500}) || s.Commands["lpop"].Calls != 20 {
		t.Fatalf("%+v", s)
	}
}

func TestAuth(t *testing.T) {
	addr := fakeRedis(t, "s3cret")
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
