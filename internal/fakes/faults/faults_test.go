package faults_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/fakes/faults"
)

func TestCountdown(t *testing.T) {
	for _, c := range []struct {
		name string
		n    faults.Countdown
		want string
	}{
		{"zero", 0, "---"},
		{"two", 2, "yy-"},
		{"always", faults.Always, "yyy"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := ""
			for range 3 {
				if c.n.Take() {
					got += "y"
				} else {
					got += "-"
				}
			}
			if got != c.want {
				t.Errorf("took %s, want %s", got, c.want)
			}
		})
	}
}

// actions takes n actions and writes each as D (drop), the failure, or - (go on).
func actions(f *faults.Faults[int], n int) string {
	var b strings.Builder
	for range n {
		switch a := f.Take(); {
		case a.Drop:
			b.WriteString("D")
		case a.Fail != 0:
			fmt.Fprint(&b, a.Fail)
		default:
			b.WriteString("-")
		}
	}
	return b.String()
}

func TestTake(t *testing.T) {
	f := faults.New[int](time.Second)
	if got := actions(f, 2); got != "--" {
		t.Errorf("new: %s", got)
	}
	f.Fail(5, 2)
	f.Drop(1)
	if got := actions(f, 4); got != "D55-" {
		t.Errorf("Drop(1) and Fail(5, 2): %s, want the drop first", got)
	}
	f.Fail(7, faults.Always)
	if got := actions(f, 3); got != "777" {
		t.Errorf("Fail(7, Always): %s", got)
	}
	f.Fail(0, faults.Always)
	if got := actions(f, 2); got != "--" {
		t.Errorf("Fail(0, Always): %s", got)
	}
	f.Fail(7, 0)
	if got := actions(f, 1); got != "-" {
		t.Errorf("Fail(7, 0): %s", got)
	}
	if n := f.Requests(); n != 12 {
		t.Errorf("%d requests, want 12", n)
	}
}

func TestDelayRetryAfterAndReset(t *testing.T) {
	f := faults.New[int](time.Second)
	if a := f.Take(); a.Delay != 0 || a.RetryAfter != time.Second {
		t.Errorf("new: %+v", a)
	}
	f.SetDelay(time.Minute)
	f.SetRetryAfter(3 * time.Second)
	f.Fail(5, faults.Always)
	f.Drop(faults.Always)
	if a := f.Take(); a.Delay != time.Minute || a.RetryAfter != 3*time.Second || f.RetryAfter() != 3*time.Second {
		t.Errorf("set: %+v", a)
	}
	f.Reset()
	if a := f.Take(); a != (faults.Action[int]{RetryAfter: time.Second}) || f.Requests() != 1 {
		t.Errorf("after Reset: %+v, %d requests", a, f.Requests())
	}
	var zero faults.Faults[string]
	if a := zero.Take(); a != (faults.Action[string]{}) {
		t.Errorf("zero Faults: %+v", a)
	}
}

func TestSleep(t *testing.T) {
	if !faults.Sleep(nil, 0) || !faults.Sleep(nil, time.Millisecond) {
		t.Error("a short sleep did not finish")
	}
	done := make(chan struct{})
	close(done)
	if faults.Sleep(done, time.Minute) {
		t.Error("Sleep outlasted done")
	}
}

func TestSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int64{0: 0, time.Millisecond: 1, time.Second: 1, 2500 * time.Millisecond: 3} {
		if got := faults.Seconds(d); got != want {
			t.Errorf("Seconds(%v) = %d, want %d", d, got, want)
		}
	}
}

// server serves an echo handler behind f; the failure answer is the status Fail holds, with
// the body it read.
func server(t *testing.T, f *faults.Faults[int], limit int64) *httptest.Server {
	fail := func(w http.ResponseWriter, r *http.Request, a faults.Action[int]) {
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(a.Fail)
		fmt.Fprintf(w, "failed %s", b)
	}
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			fmt.Fprintf(w, "too big after %s", b)
			return
		}
		fmt.Fprintf(w, "echo %s", b)
	})
	srv := httptest.NewServer(faults.Handler(f, limit, fail, echo))
	t.Cleanup(srv.Close)
	return srv
}

func post(ctx context.Context, url, body string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return fmt.Sprintf("%d %s", res.StatusCode, b), nil
}

func TestHandler(t *testing.T) {
	f := faults.New[int](0)
	srv := server(t, f, 8)
	ctx := context.Background()
	check := func(name, body, want string) {
		t.Helper()
		got, err := post(ctx, srv.URL, body)
		if err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", name, got, err, want)
		}
	}
	check("no fault", "hello", "200 echo hello")
	check("over the limit", "123456789", "200 too big after 12345678")
	f.Fail(http.StatusServiceUnavailable, 1)
	check("failure", "hello", "503 failed hello")
	check("after the failure", "hello", "200 echo hello")

	f.Drop(1)
	if got, err := post(ctx, srv.URL, "hello"); err == nil {
		t.Errorf("dropped request answered %q", got)
	}
	check("after the drop", "hello", "200 echo hello")

	f.SetDelay(time.Minute)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if got, err := post(short, srv.URL, "hello"); err == nil {
		t.Errorf("delayed request answered %q", got)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("gave up after %v", d)
	}
	f.SetDelay(0)
	check("after the delay", "hello", "200 echo hello")
	if n := f.Requests(); n != 8 {
		t.Errorf("%d requests, want 8", n)
	}
}

func TestTally(t *testing.T) {
	var tl faults.Tally
	if keep, report := tl.Accept(2); !keep || report != nil {
		t.Errorf("before CountOnly: keep %v, report %v", keep, report != nil)
	}
	var got []string
	tl.CountOnly(func(id string, _ time.Time) { got = append(got, id) })
	keep, report := tl.Accept(1)
	if keep || report == nil {
		t.Fatalf("in CountOnly: keep %v, report %v", keep, report != nil)
	}
	report("d1", time.Now())
	if len(got) != 1 || tl.Accepted() != 3 {
		t.Errorf("reported %q, accepted %d; want [d1] and 3", got, tl.Accepted())
	}
	tl.Reset()
	if keep, _ := tl.Accept(1); keep || tl.Accepted() != 1 {
		t.Errorf("after Reset: keep %v (CountOnly stays), accepted %d", keep, tl.Accepted())
	}
	tl.CountOnly(nil)
	if keep, report := tl.Accept(1); keep || report != nil {
		t.Errorf("CountOnly(nil): keep %v, report %v", keep, report != nil)
	}
}
