package webhooks

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/heraldhq/herald/services/notifier"
)

var fuzzNow = time.Date(2030, time.March, 4, 5, 6, 7, 0, time.UTC)

// checkEvent holds what every parsed event must satisfy before it goes to PostgreSQL and the
// events stream: a usable id, a known kind, text PostgreSQL accepts, and no address kept.
func checkEvent(t *testing.T, e notifier.ProviderEvent) {
	t.Helper()
	if e.Provider != sendGridProvider && e.Provider != twilioProvider {
		t.Fatalf("provider %q", e.Provider)
	}
	if !validID(e.ID) || len(e.ID) > maxEventID {
		t.Fatalf("event id %q", e.ID)
	}
	if e.ProviderMessageID != "" && !validID(e.ProviderMessageID) {
		t.Fatalf("message id %q", e.ProviderMessageID)
	}
	switch e.Kind {
	case notifier.EventAccepted, notifier.EventDeferred, notifier.EventDelivered, notifier.EventBounced,
		notifier.EventDropped, notifier.EventOpened, notifier.EventClicked, notifier.EventSpamReport,
		notifier.EventUnsubscribed, notifier.EventOther:
	default:
		t.Fatalf("kind %q", e.Kind)
	}
	switch e.Effect {
	case notifier.NoAddressEffect, notifier.AddressInvalid, notifier.AddressOptedOut:
	default:
		t.Fatalf("effect %q", e.Effect)
	}
	if e.OccurredAt.IsZero() || e.OccurredAt.After(fuzzNow.Add(24*time.Hour)) {
		t.Fatalf("occurred at %v", e.OccurredAt)
	}
	for _, s := range []string{e.ID, e.ProviderMessageID, e.Reason, string(e.Details)} {
		if !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl) {
			t.Fatalf("text PostgreSQL may refuse: %q", s)
		}
	}
	if strings.Contains(e.Reason, "@") || strings.Contains(string(e.Details), "@") {
		t.Fatalf("an address may be kept: reason %q details %s", e.Reason, e.Details)
	}
	var details map[string]any
	if err := json.Unmarshal(e.Details, &details); err != nil {
		t.Fatalf("details %s: %v", e.Details, err)
	}
	if strings.Contains(string(e.Details), `\u0000`) {
		t.Fatalf("details hold a NUL, which jsonb refuses: %s", e.Details)
	}
}

func FuzzSendGridEvents(f *testing.F) {
	for _, seed := range []string{
		`[{"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>","event":"processed","category":"cat facts","sg_event_id":"rbtnWrG1DVDGGGFHFyun0A==","sg_message_id":"14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.000000000000000000000","delivery_id":"01890a5d-ac96-774b-bcce-b302099a8057","notification_id":"01890a5d-ac96-774b-bcce-b302099a8058"}]`,
		`[{"email":"example@test.com","timestamp":1513299569,"event":"delivered","sg_event_id":"rWVYmVk90MjZJ9iohOBa3w==","sg_message_id":"W9jHwXRKRWe7aiwGm3rG0A.filterdrecv-p3las1-5bf99c48d-wlf5b-20-5BF2C1E5-2F.0","response":"250 OK","tls":1}]`,
		`[{"email":"a@b.c","timestamp":1513299569,"event":"bounce","type":"bounce","status":"5.1.1","bounce_classification":"Invalid Address","reason":"550 5.1.1 <a@b.c>: Recipient address rejected","sg_event_id":"6g4ZI7SA-xmRDv57GoPIPw==","sg_message_id":"BmH-ZtxzTTmgTslmgeimVA.recvd-5d86b8c8b4-l8ljq-1-5E1C68F6-27.0"}]`,
		`[{"event":"bounce","type":"blocked","status":"5.7.1","sg_event_id":"x1","timestamp":1600000000}]`,
		`[{"event":"dropped","reason":"Bounced Address","sg_event_id":"x2","timestamp":"1600000000"}]`,
		`[{"event":"deferred","attempt":"5","response":"400 try again later","sg_event_id":"x3"}]`,
		`[{"event":"open","sg_machine_open":false,"useragent":"Mozilla/4.0","ip":"255.255.255.255","sg_event_id":"x4"}]`,
		`[{"event":"click","url":"http://www.sendgrid.com/?e=a@b.c","url_offset":{"index":0,"type":"html"},"sg_event_id":"x5"}]`,
		`[{"event":"spamreport","sg_event_id":"x6"},{"event":"unsubscribe","sg_event_id":"x7"},{"event":"group_unsubscribe","asm_group_id":10,"sg_event_id":"x8"}]`,
		`[{"event":"delivered","sg_event_id":"a\u0000b"},{"event":"delivered","sg_event_id":"a@b"},{"event":7,"sg_event_id":"x9"},null,1,"s",[]]`,
		`[{"event":"delivered","sg_event_id":"x10","timestamp":1e300,"delivery_id":"not-a-uuid","reason":"\ud800"}]`,
		`[]`,
		`{}`,
		``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		evs, skipped, err := parseSendGrid(body, fuzzNow)
		if err != nil {
			return
		}
		if skipped < 0 {
			t.Fatalf("skipped %d", skipped)
		}
		for _, e := range evs {
			if e.Provider != sendGridProvider {
				t.Fatalf("provider %q", e.Provider)
			}
			checkEvent(t, e)
		}
	})
}

func FuzzTwilioStatus(f *testing.F) {
	for _, seed := range []struct{ form, query string }{
		{"MessageSid=SM0123456789abcdef0123456789abcdef&SmsSid=SM0123456789abcdef0123456789abcdef&MessageStatus=delivered&SmsStatus=delivered&AccountSid=AC00000000000000000000000000000000&From=%2B15550000000&To=%2B15551234567&ApiVersion=2010-04-01", ""},
		{"MessageSid=SM0123456789abcdef0123456789abcdef&MessageStatus=undelivered&ErrorCode=30003&To=%2B15551234567", "delivery_id=01890a5d-ac96-774b-bcce-b302099a8057"},
		{"MessageSid=SM0123456789abcdef0123456789abcdef&MessageStatus=failed&ErrorCode=21610", ""},
		{"SmsSid=MM0123456789abcdef0123456789abcdef&SmsStatus=sent&RawDlrDoneDate=2401021504", ""},
		{"MessageSid=SM0123456789abcdef0123456789abcdef&MessageStatus=read&MessagingServiceSid=MG0123456789abcdef0123456789abcdef", ""},
		{"MessageSid=SM0123456789abcdef0123456789abcdef&MessageStatus=failed&ErrorCode=%00%40x", "delivery_id=%00"},
		{"MessageSid=x&MessageStatus=DELIVERED", ""},
		{"", ""},
	} {
		f.Add(seed.form, seed.query)
	}
	f.Fuzz(func(t *testing.T, form, query string) {
		fv, err := url.ParseQuery(form)
		if err != nil {
			return
		}
		qv, _ := url.ParseQuery(query)
		e, err := parseTwilio(fv, qv, fuzzNow)
		if err != nil {
			return
		}
		if e.Provider != twilioProvider || !strings.HasPrefix(e.ID, e.ProviderMessageID+":") {
			t.Fatalf("event %+v", e)
		}
		checkEvent(t, e)
		var details map[string]string
		if err := json.Unmarshal(e.Details, &details); err != nil {
			t.Fatal(err)
		}
		for k := range details {
			if k == "To" || k == "From" || k == "Body" {
				t.Fatalf("details keep %s", k)
			}
		}
	})
}
