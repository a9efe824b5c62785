package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/pgtext"
	"github.com/heraldhq/herald/services/workers"
)

// DefaultTimeout bounds one call from a Sender to the simulator.
const DefaultTimeout = 10 * time.Second

// maxAnswerBytes bounds how much of an answer a Sender reads.
const maxAnswerBytes = 64 << 10

// Sender is the workers.Sender for one channel that sends to a simulator Server. It is safe for
// concurrent use.
type Sender struct {
	endpoint string
	channel  delivery.Channel
	client   *http.Client
}

var _ workers.Sender = (*Sender)(nil)

// NewSender returns a Sender for channel that posts to the simulator at baseURL (scheme and
// host, e.g. http://127.0.0.1:8090).
func NewSender(baseURL string, channel delivery.Channel) *Sender {
	return &Sender{
		endpoint: strings.TrimRight(baseURL, "/") + "/v1/messages",
		channel:  channel,
		client: &http.Client{
			Timeout:       DefaultTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Provider returns "sim".
func (s *Sender) Provider() string { return "sim" }

// Send posts m to the simulator and returns the id it assigned. A 4xx answer is a
// *workers.PermanentError with reason "rejected" (408 and 429 excepted); a 5xx, a timeout or a
// network failure is a *workers.TransientError. Errors carry the simulator's message, never
// the address or the content.
func (s *Sender) Send(ctx context.Context, m *workers.Message) (workers.Result, error) {
	if m.Channel != "" && m.Channel != s.channel {
		return workers.Result{}, workers.Permanent("wrong_channel",
			fmt.Errorf("sim: delivery %s is on channel %q, this sender sends %q", m.DeliveryID, m.Channel, s.channel))
	}
	body, err := json.Marshal(sendRequest{
		DeliveryID:     m.DeliveryID.String(),
		NotificationID: m.NotificationID.String(),
		Channel:        s.channel,
		To:             m.To,
		Content:        m.Content,
	})
	if err != nil {
		// Content.Data can hold values JSON cannot encode; resending cannot fix that.
		return workers.Result{}, workers.Permanent("rejected", fmt.Errorf("sim: encode delivery %s: %w", m.DeliveryID, err))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint, bytes.NewReader(body))
	if err != nil {
		return workers.Result{}, fmt.Errorf("sim: send delivery %s: %w", m.DeliveryID, err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return workers.Result{}, workers.Transient(0, fmt.Errorf("sim: send delivery %s: %w", m.DeliveryID, err))
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, maxAnswerBytes))
	if err != nil && res.StatusCode/100 != 2 {
		return workers.Result{}, workers.Transient(0, fmt.Errorf("sim: send delivery %s: read answer: %w", m.DeliveryID, err))
	}

	if res.StatusCode/100 == 2 {
		var ok sendResponse
		if err := json.Unmarshal(raw, &ok); err != nil || ok.ID == "" {
			// The simulator took the message; its id is lost, the message is not.
			return workers.Result{}, nil
		}
		return workers.Result{ProviderMessageID: ok.ID}, nil
	}

	var e errorResponse
	_ = json.Unmarshal(raw, &e)
	msg := pgtext.Line(e.Error, 200)
	status := fmt.Sprintf("%d %s", res.StatusCode, http.StatusText(res.StatusCode))
	if msg != "" {
		status += ": " + msg
	}
	err = fmt.Errorf("sim: send delivery %s: %s", m.DeliveryID, status)
	switch code := res.StatusCode; {
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests:
		return workers.Result{}, workers.Transient(retryAfter(res.Header), err)
	case code >= 400 && code < 500:
		return workers.Result{}, workers.Permanent("rejected", err)
	default:
		return workers.Result{}, workers.Transient(retryAfter(res.Header), err)
	}
}

// retryAfter reads a Retry-After given in seconds; zero when there is none.
func retryAfter(h http.Header) time.Duration {
	secs, err := strconv.Atoi(h.Get("Retry-After"))
	if err != nil || secs <= 0 || secs > 3600 {
		return 0
	}
	return time.Duration(secs) * time.Second
}
