package smtp

import (
	"fmt"
	"net"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// nonLoopback records every dial the Senders attempted to an address that is not loopback.
var nonLoopback struct {
	sync.Mutex
	addrs []string
}

// TestMain makes the Senders refuse, and the run fail on, any connection that is not to
// loopback: tests talk to fakes only.
func TestMain(m *testing.M) {
	dialControl = func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if ip := net.ParseIP(host); err == nil && ip != nil && ip.IsLoopback() {
			return nil
		}
		nonLoopback.Lock()
		nonLoopback.addrs = append(nonLoopback.addrs, address)
		nonLoopback.Unlock()
		return fmt.Errorf("test dialed %s, not loopback", address)
	}
	code := m.Run()
	if len(nonLoopback.addrs) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: tests dialed non-loopback addresses: %v\n", nonLoopback.addrs)
		code = 1
	}
	os.Exit(code)
}

func TestReplyError(t *testing.T) {
	tests := []struct {
		st   stage
		msg  string
		want ReplyError
	}{
		{stageRcpt, "5.1.1 <ada@example.com>: Recipient address rejected: User unknown",
			ReplyError{"RCPT TO", 550, "5.1.1", "<[address]>: Recipient address rejected: User unknown"}},
		{stageEnd, "5.7.1 Message rejected\nsee https://example.com/policy for ada@example.com",
			ReplyError{"end of data", 550, "5.7.1", "Message rejected see https://example.com/policy for [address]"}},
		{stageMail, "Sender address rejected", ReplyError{"MAIL FROM", 550, "", "Sender address rejected"}},
		{stageConnect, "5.7.8", ReplyError{"connect", 550, "5.7.8", ""}},
		{stageRcpt, "5.1.10 [ADA@Example.COM] unknown", ReplyError{"RCPT TO", 550, "5.1.10", "[[address]] unknown"}},
	}
	for _, tt := range tests {
		got := replyError(tt.st, &textproto.Error{Code: 550, Msg: tt.msg}, "ada@example.com")
		if *got != tt.want {
			t.Errorf("replyError(%q) = %+v, want %+v", tt.msg, *got, tt.want)
		}
	}
	long := replyError(stageData, &textproto.Error{Code: 554, Msg: strings.Repeat("é", 300)}, "")
	if len(long.Message) > maxMessageLen+3 || !strings.HasSuffix(long.Message, "...") {
		t.Errorf("long message not cut: %d bytes", len(long.Message))
	}
}

// FuzzReplyError checks that no reply gets the recipient's address through.
func FuzzReplyError(f *testing.F) {
	f.Add("5.1.1 <ada@example.com>: Recipient address rejected", "ada@example.com")
	f.Add("ada@example.com@example.com", "ada@example.com")
	f.Add("5.1.1 \"ada@example.com\"", "ada@example.com")
	f.Fuzz(func(t *testing.T, msg, to string) {
		if !strings.Contains(to, "@") || strings.ContainsAny(to, " \t\r\n\"'<>(),;:[]") || strings.HasPrefix(to, "@") || strings.HasSuffix(to, "@") {
			t.Skip()
		}
		got := replyError(stageRcpt, &textproto.Error{Code: 550, Msg: msg}, to)
		if strings.Contains(got.Error(), to) {
			t.Errorf("replyError(%q) = %q keeps %q", msg, got, to)
		}
	})
}
