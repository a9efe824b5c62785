package twilio

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
)

// spaces is a body of spaces that never ends.
type spaces struct{}

func (spaces) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}

type answerWith struct{ status int }

func (a answerWith) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: a.status, Header: http.Header{}, Body: io.NopCloser(io.LimitReader(spaces{}, 4*maxErrorBody)), Request: req}, nil
}

// TestAnswersAreBounded: twilio-go reads an answer with no bound of its own; whatever its status,
// it gets at most maxErrorBody bytes of it.
func TestAnswersAreBounded(t *testing.T) {
	for _, status := range []int{http.StatusCreated, http.StatusBadRequest} {
		rt := &roundTripper{ctx: context.Background(), next: answerWith{status}}
		req, err := http.NewRequest(http.MethodPost, "https://api.twilio.com/2010-04-01/Accounts/AC/Messages.json", nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, res.Body)
		var tooLarge *http.MaxBytesError
		if n > maxErrorBody || (err != nil && !errors.As(err, &tooLarge)) {
			t.Errorf("%d: read %d bytes, then %v", status, n, err)
		}
		if rt.status != status {
			t.Errorf("%d: kept status %d", status, rt.status)
		}
	}
}
