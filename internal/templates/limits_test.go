package templates

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf16"
)

func TestSMSSegments(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		encoding string
		segments int
	}{
		{"empty", "", EncodingGSM7, 0},
		{"one character", "a", EncodingGSM7, 1},
		{"exactly 160", strings.Repeat("a", 160), EncodingGSM7, 1},
		{"161 is two of 153", strings.Repeat("a", 161), EncodingGSM7, 2},
		{"exactly 306", strings.Repeat("a", 306), EncodingGSM7, 2},
		{"307", strings.Repeat("a", 307), EncodingGSM7, 3},
		{"1530 is ten", strings.Repeat("a", 1530), EncodingGSM7, 10},
		{"whole basic alphabet", gsmBasic, EncodingGSM7, 1},
		{"GSM letters with accents", "Grüße aus Malaga: ÄÖÜ äöü ñ à è é ù ì ò Ç Øø Åå ÆæßÉ ¿¡ §", EncodingGSM7, 1},
		{"greek capitals", "ΔΦΓΛΩΠΨΣΘΞ", EncodingGSM7, 1},
		{"line breaks", "a\nb\rc", EncodingGSM7, 1},
		{"euro counts two", "€" + strings.Repeat("a", 158), EncodingGSM7, 1},
		{"euro counts two past 160", "€" + strings.Repeat("a", 159), EncodingGSM7, 2},
		{"every extension character counts two", strings.Repeat("{}[]~\\^|€\f", 8), EncodingGSM7, 1},
		{"extension characters past 160", strings.Repeat("{}[]~\\^|€\f", 8) + "a", EncodingGSM7, 2},
		{"80 braces fill one", strings.Repeat("{", 80), EncodingGSM7, 1},
		{"81 braces take two", strings.Repeat("{", 81), EncodingGSM7, 2},
		// 152 septets, then an escape pair that does not fit in the 153rd: it moves whole.
		{"escape pair not split", strings.Repeat("a", 152) + "€" + strings.Repeat("a", 152), EncodingGSM7, 3},
		{"escape pair fits", strings.Repeat("a", 151) + "€" + strings.Repeat("a", 153), EncodingGSM7, 2},
		{"a tab is not GSM", "a\tb", EncodingUCS2, 1},
		{"lower-case c cedilla is not GSM", "ç", EncodingUCS2, 1},
		{"one emoji switches to UCS-2", strings.Repeat("a", 60) + "🎉", EncodingUCS2, 1},
		{"exactly 70 UCS-2", strings.Repeat("ж", 70), EncodingUCS2, 1},
		{"71 UCS-2 is two of 67", strings.Repeat("ж", 71), EncodingUCS2, 2},
		{"134 UCS-2", strings.Repeat("ж", 134), EncodingUCS2, 2},
		{"135 UCS-2", strings.Repeat("ж", 135), EncodingUCS2, 3},
		{"35 emoji are 70 units", strings.Repeat("🎉", 35), EncodingUCS2, 1},
		{"36 emoji are 72 units", strings.Repeat("🎉", 36), EncodingUCS2, 2},
		// 66 units, then a surrogate pair that does not fit in the 67th unit: it moves whole.
		{"surrogate pair not split", strings.Repeat("ж", 66) + "🎉" + strings.Repeat("ж", 10), EncodingUCS2, 2},
		{"surrogate pair moved fills the next", strings.Repeat("ж", 66) + "🎉" + strings.Repeat("ж", 65), EncodingUCS2, 2},
		{"surrogate pair moved, then a third", strings.Repeat("ж", 66) + "🎉" + strings.Repeat("ж", 66), EncodingUCS2, 3},
		{"CJK", "你好，世界", EncodingUCS2, 1},
		{"invalid UTF-8 is UCS-2", "a\xffb", EncodingUCS2, 1},
		{"zwj family", "👩‍👩‍👧", EncodingUCS2, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			enc, n := SMSSegments(tc.body)
			if enc != tc.encoding || n != tc.segments {
				t.Errorf("SMSSegments = %s, %d; want %s, %d", enc, n, tc.encoding, tc.segments)
			}
		})
	}
}

func TestCheckSMS(t *testing.T) {
	if err := CheckSMS(strings.Repeat("a", 1530), 10); err != nil {
		t.Errorf("ten segments: %v", err)
	}
	err := CheckSMS(strings.Repeat("a", 1531), 10)
	var e *Error
	if !errors.As(err, &e) || e.Part != PartSMSBody || !strings.Contains(err.Error(), "11 GSM-7 segments") {
		t.Errorf("eleven segments: %v", err)
	}
	err = CheckSMS("🎉"+strings.Repeat("a", 200), 3)
	if !errors.As(err, &e) || !strings.Contains(err.Error(), "4 UCS-2 segments") || !strings.Contains(err.Error(), "emoji") {
		t.Errorf("UCS-2: %v", err)
	}
	if err := Check(Rendered{SMSBody: strings.Repeat("a", 161)}, nil, Limits{SMSSegments: 1}); err == nil {
		t.Error("Check ignored Limits.SMSSegments")
	}
	if err := Check(Rendered{SMSBody: strings.Repeat("a", 1530)}, nil, Limits{}); err != nil {
		t.Errorf("zero Limits is not the default: %v", err)
	}
}

// apnsSize and fcmSize build the payloads the way the workers do, as typed structs rather than
// maps, so that PushPayloadSize is checked against an independent construction.
func apnsSize(t *testing.T, title, body string, data map[string]any) int {
	type alert struct {
		Body  string `json:"body,omitempty"`
		Title string `json:"title,omitempty"`
	}
	type aps struct {
		Alert            *alert `json:"alert,omitempty"`
		ContentAvailable int    `json:"content-available,omitempty"`
		Sound            string `json:"sound,omitempty"`
	}
	p := map[string]any{}
	if title != "" || body != "" {
		p["aps"] = aps{Alert: &alert{Body: body, Title: title}, Sound: "default"}
	} else {
		p["aps"] = aps{ContentAvailable: 1}
	}
	if len(data) > 0 {
		p["data"] = data
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return len(b)
}

func fcmSize(t *testing.T, title, body string, data map[string]any) int {
	type notification struct {
		Title string `json:"title,omitempty"`
		Body  string `json:"body,omitempty"`
	}
	flat := map[string]string{"herald_delivery_id": "0190b6f4-0000-7000-8000-000000000001"}
	for k, v := range data {
		if s, ok := v.(string); ok {
			flat[k] = s
			continue
		}
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		flat[k] = strings.TrimSuffix(b.String(), "\n")
	}
	m := struct {
		Data         map[string]string `json:"data"`
		Notification *notification     `json:"notification,omitempty"`
	}{Data: flat}
	if title != "" || body != "" {
		m.Notification = &notification{title, body}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return len(b)
}

func TestPushPayloadSize(t *testing.T) {
	tests := []struct {
		name        string
		title, body string
		data        map[string]any
	}{
		{"title and body", "Hello", "World", nil},
		{"body only", "", "World", nil},
		{"data only", "", "", map[string]any{"a": "b"}},
		{"nothing", "", "", nil},
		{"escaped characters", `<a href="x">&</a>`, "line\nbreak \"quoted\" \u2028", map[string]any{"h": "<b>"}},
		{"nested data", "t", "b", map[string]any{"order": map[string]any{"id": "A-1", "items": []any{1.0, "x", nil, true}}, "n": 2.5}},
		{"non-ASCII", "Grüße", "🎉 你好", map[string]any{"ü": "é"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PushPayloadSize(tc.title, tc.body, tc.data)
			if err != nil {
				t.Fatal(err)
			}
			want := max(apnsSize(t, tc.title, tc.body, tc.data), fcmSize(t, tc.title, tc.body, tc.data))
			if got != want {
				t.Errorf("PushPayloadSize = %d; want %d (apns %d, fcm %d)", got, want,
					apnsSize(t, tc.title, tc.body, tc.data), fcmSize(t, tc.title, tc.body, tc.data))
			}
		})
	}
}

func TestCheckPush(t *testing.T) {
	// overhead is what the APNs payload adds to a body with an empty title and no data, the
	// larger of the two payloads for this shape.
	base, err := PushPayloadSize("", "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	fits := strings.Repeat("x", MaxPushPayload-base+1)
	tests := []struct {
		name        string
		title, body string
		data        map[string]any
		part        string // "" for no error
	}{
		{"exactly at the limit", "", fits, nil, ""},
		{"one byte over", "", fits + "x", nil, PartPushBody},
		{"escaping counts", "", fits[:len(fits)-5] + "<", nil, PartPushBody},
		{"title over", strings.Repeat("t", 5000), "", nil, PartPushTitle},
		{"title and body over", strings.Repeat("t", 2100), strings.Repeat("b", 2100), nil, PartPushBody},
		{"data over alone", "", "hi", map[string]any{"blob": strings.Repeat("d", 4100)}, PartData},
		{"data and body over together", "", strings.Repeat("b", 2100), map[string]any{"blob": strings.Repeat("d", 2100)}, PartPushBody},
		{"non-JSON data", "", "hi", map[string]any{"n": func() {}}, PartData},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckPush(tc.title, tc.body, tc.data)
			if tc.part == "" {
				if err != nil {
					t.Fatalf("CheckPush: %v", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Part != tc.part {
				t.Fatalf("CheckPush = %v; want an *Error for %s", err, tc.part)
			}
			for _, leak := range []string{"ddddd", "bbbbb"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error %q quotes the data", err)
				}
			}
		})
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		r    Rendered
		data map[string]any
		part string
	}{
		{"empty", Rendered{}, nil, ""},
		{"everything within", Rendered{PushTitle: "t", PushBody: "b", SMSBody: "s", EmailSubject: strings.Repeat("s", 255),
			EmailHTML: strings.Repeat("h", MaxEmailBody), EmailText: "x"}, map[string]any{"a": 1.0}, ""},
		{"subject of 255 characters", Rendered{EmailSubject: strings.Repeat("ü", 255)}, nil, ""},
		{"subject of 256 characters", Rendered{EmailSubject: strings.Repeat("s", 256)}, nil, PartEmailSubject},
		{"subject with a tab", Rendered{EmailSubject: "a\tb"}, nil, ""},
		{"subject of two lines", Rendered{EmailSubject: "a\r\nBcc: x@example.com"}, nil, PartEmailSubject},
		{"subject with a line separator", Rendered{EmailSubject: "a\u2028b"}, nil, PartEmailSubject},
		{"html too large", Rendered{EmailHTML: strings.Repeat("h", MaxEmailBody+1)}, nil, PartEmailHTML},
		{"text too large", Rendered{EmailText: strings.Repeat("h", MaxEmailBody+1)}, nil, PartEmailText},
		{"sms over", Rendered{SMSBody: strings.Repeat("s", 1531)}, nil, PartSMSBody},
		{"push over", Rendered{PushBody: strings.Repeat("p", 4096)}, nil, PartPushBody},
		{"data is checked only with push", Rendered{SMSBody: "s"}, map[string]any{"blob": strings.Repeat("d", 5000)}, ""},
		{"data with push", Rendered{PushTitle: "t"}, map[string]any{"blob": strings.Repeat("d", 5000)}, PartData},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.r, tc.data, Limits{})
			if tc.part == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Part != tc.part {
				t.Fatalf("Check = %v; want an *Error for %s", err, tc.part)
			}
		})
	}
}

// referenceSegments splits body into actual segments, the slow way: it is what SMSSegments
// must agree with.
func referenceSegments(body string) (string, int) {
	if body == "" {
		return EncodingGSM7, 0
	}
	gsm := true
	for _, r := range body {
		if !strings.ContainsRune(gsmBasic, r) && !strings.ContainsRune(gsmExtension, r) {
			gsm = false
		}
	}
	units := func(r rune) int {
		if !gsm {
			return len(utf16.Encode([]rune{r}))
		}
		if strings.ContainsRune(gsmExtension, r) {
			return 2
		}
		return 1
	}
	single, multi, enc := 70, 67, EncodingUCS2
	if gsm {
		single, multi, enc = 160, 153, EncodingGSM7
	}
	total := 0
	for _, r := range body {
		total += units(r)
	}
	if total <= single {
		return enc, 1
	}
	var segs [][]rune
	var cur []rune
	used := 0
	for _, r := range body {
		if used+units(r) > multi {
			segs, cur, used = append(segs, cur), nil, 0
		}
		cur = append(cur, r)
		used += units(r)
	}
	return enc, len(append(segs, cur))
}

func FuzzSMSSegments(f *testing.F) {
	for _, s := range []string{"", "a", strings.Repeat("a", 161), "€{}", "🎉", strings.Repeat("ж", 71), gsmBasic, "a\xffb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		enc, n := SMSSegments(body)
		renc, rn := referenceSegments(body)
		if enc != renc || n != rn {
			t.Fatalf("SMSSegments(%q) = %s, %d; reference %s, %d", body, enc, n, renc, rn)
		}
		if body != "" && n < 1 {
			t.Fatalf("SMSSegments(%q) = %d segments", body, n)
		}
	})
}

func FuzzCheckPush(f *testing.F) {
	f.Add("Hello", "World", "k", "v")
	f.Add("", "", "", "")
	f.Add("<&>", "\u2028\x00", "herald_delivery_id", strings.Repeat("x", 4000))
	f.Fuzz(func(t *testing.T, title, body, key, value string) {
		data := map[string]any{key: value, "n": 1.5, "l": []any{value}}
		size, err := PushPayloadSize(title, body, data)
		if err != nil {
			t.Fatalf("PushPayloadSize: %v", err)
		}
		if want := max(apnsSize(t, title, body, data), fcmSize(t, title, body, data)); size != want && key != "herald_delivery_id" {
			t.Fatalf("PushPayloadSize = %d; want %d", size, want)
		}
		err = CheckPush(title, body, data)
		if (err != nil) != (size > MaxPushPayload) {
			t.Fatalf("CheckPush = %v for a payload of %d bytes", err, size)
		}
		var e *Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("CheckPush error %v is not an *Error", err)
		}
	})
}
