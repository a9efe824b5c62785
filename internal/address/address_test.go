package address

import (
	"strings"
	"testing"
	"unicode/utf8"
)

type testCase struct {
	name string
	in   string
	want string // normalised output; "" means the input must be rejected
}

func run(t *testing.T, fn func(string) (string, error), cases []testCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := fn(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("accepted, returned %q; want an error", got)
				}
				checkReason(t, err)
				return
			}
			if err != nil {
				t.Fatalf("error %q; want %q", err, tc.want)
			}
			if got != tc.want {
				t.Fatalf("got %q; want %q", got, tc.want)
			}
		})
	}
}

// checkReason fails unless err is one of the package's fixed reasons, which cannot repeat the
// input: inputs are personal data.
func checkReason(t *testing.T, err error) {
	t.Helper()
	for _, r := range []error{
		errEmail, errEmailTooLong, errLocalTooLong,
		errPhone, errPhoneTooLong, errPhoneInvalid, errPhoneExt,
		errAPNsToken, errFCMTokenEmpty, errFCMTokenLong, errFCMToken,
	} {
		if err == r {
			return
		}
	}
	t.Errorf("error %q is not one of the fixed reasons", err)
}

func TestEmail(t *testing.T) {
	long := strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 57) + ".com"
	run(t, Email, []testCase{
		{"plain", "name@example.com", "name@example.com"},
		{"domain lower-cased", "Name@Example.COM", "Name@example.com"},
		{"surrounding space trimmed", "  name@example.com\n", "name@example.com"},
		{"subdomain", "a.b+tag@mail.example.co.uk", "a.b+tag@mail.example.co.uk"},
		{"atext symbols", "o'brien!#$%&*/=?^_`{|}~-@example.com", "o'brien!#$%&*/=?^_`{|}~-@example.com"},
		{"hyphen inside label", "a@my-host.example", "a@my-host.example"},
		{"punycode domain", "a@xn--bcher-kva.de", "a@xn--bcher-kva.de"},
		{"unicode domain kept", "a@Bücher.de", "a@bücher.de"},
		{"numeric labels", "a@123.example", "a@123.example"},
		{"254 characters", long, long},

		{"empty", "", ""},
		{"blank", "   ", ""},
		{"no at", "name.example.com", ""},
		{"two ats", "a@b@example.com", ""},
		{"display name", "Name <name@example.com>", ""},
		{"angle brackets", "<name@example.com>", ""},
		{"comment", "name@example.com (work)", ""},
		{"quoted local part", `"name"@example.com`, ""},
		{"quoted local part with space", `"a b"@example.com`, ""},
		{"unicode local part", "jürgen@example.com", ""},
		{"single-label domain", "root@localhost", ""},
		{"ip literal", "a@[192.0.2.1]", ""},
		{"ipv4 domain", "a@192.0.2.1", ""},
		{"trailing dot", "a@example.com.", ""},
		{"empty label", "a@example..com", ""},
		{"leading hyphen", "a@-example.com", ""},
		{"trailing hyphen", "a@example-.com", ""},
		{"underscore in domain", "a@ex_ample.com", ""},
		{"label of 64", "a@" + strings.Repeat("x", 64) + ".com", ""},
		{"dot first", ".a@example.com", ""},
		{"double dot", "a..b@example.com", ""},
		{"space inside", "a b@example.com", ""},
		{"nul byte", "a\x00@example.com", ""},
		{"newline inside", "a@example.com\nBcc: b@example.com", ""},
		{"control character", "a\x07@example.com", ""},
		{"symbol in domain", "a@exa☃mple.com", ""},
		{"invalid utf-8", "a@ex\xffample.com", ""},
		{"local part of 65", strings.Repeat("a", 65) + "@example.com", ""},
		{"255 characters", "a" + long, ""},
		{"very long", strings.Repeat("a", 1<<20) + "@example.com", ""},
	})
}

func TestPhone(t *testing.T) {
	run(t, Phone, []testCase{
		{"e164", "+14155550123", "+14155550123"},
		{"formatted us", "+1 (415) 555-0123", "+14155550123"},
		{"dots", "+1.415.555.0123", "+14155550123"},
		{"uk", "+44 20 7946 0018", "+442079460018"},
		{"uk mobile", "+447911123456", "+447911123456"},
		{"de", "+49 30 901820", "+4930901820"},
		{"italian leading zero", "+39 06 1234 5678", "+390612345678"},
		{"surrounding space trimmed", " +14155550123 ", "+14155550123"},

		{"empty", "", ""},
		{"plus only", "+", ""},
		{"national form", "(415) 555-0123", ""},
		{"00 prefix", "0014155550123", ""},
		{"letters", "+1 800 FLOWERS", ""},
		{"extension", "+1 415 555 0123 ext 4", ""},
		{"tel uri", "tel:+14155550123", ""},
		{"too short", "+1415", ""},
		{"invalid country code", "+999 1234 5678", ""},
		{"invalid for country", "+1 011 555 0123", ""},
		{"fullwidth digits", "+１４１５５５５０１２３", ""},
		{"arabic-indic digits", "+١٤١٥٥٥٥٠١٢٣", ""},
		{"nul byte", "+1415555\x000123", ""},
		{"newline", "+1415555\n0123", ""},
		{"33 characters", "+1 415 555 0123" + strings.Repeat(" ", 18) + "4", ""},
		{"very long", "+" + strings.Repeat("1", 1<<20), ""},
	})
}

func TestAPNsToken(t *testing.T) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	run(t, APNsToken, []testCase{
		{"64 digits", hex64, hex64},
		{"upper case lowered", strings.ToUpper(hex64), hex64},
		{"200 digits", strings.Repeat("ab", 100), strings.Repeat("ab", 100)},
		{"surrounding space trimmed", " " + hex64 + "\n", hex64},

		{"empty", "", ""},
		{"62 digits", hex64[:62], ""},
		{"odd length", hex64 + "a", ""},
		{"202 digits", strings.Repeat("ab", 101), ""},
		{"not hex", strings.Repeat("g", 64), ""},
		{"spaces inside", "<" + hex64[:8] + " " + hex64[8:62] + ">", ""},
		{"unicode", strings.Repeat("é", 32), ""},
		{"fullwidth digits", strings.Repeat("０", 32), ""},
		{"control character", hex64[:63] + "\x00", ""},
		{"very long", strings.Repeat("a", 1<<20), ""},
	})
}

func TestFCMToken(t *testing.T) {
	tok := "dGVzdA:APA91bH-" + strings.Repeat("x_Y9", 35)
	run(t, FCMToken, []testCase{
		{"typical", tok, tok},
		{"one character", "x", "x"},
		{"4096 bytes", strings.Repeat("a", 4096), strings.Repeat("a", 4096)},
		{"surrounding space trimmed", "\t" + tok + " ", tok},

		{"empty", "", ""},
		{"blank", " \n ", ""},
		{"4097 bytes", strings.Repeat("a", 4097), ""},
		{"space inside", "abc def", ""},
		{"unicode", "tökén", ""},
		{"nul byte", "abc\x00def", ""},
		{"del", "abc\x7fdef", ""},
		{"newline inside", "abc\ndef", ""},
		{"very long", strings.Repeat("a", 1<<20), ""},
	})
}

func FuzzEmail(f *testing.F) {
	for _, s := range []string{"name@example.com", "Name@Example.COM", "a@Bücher.de", "<a@b.c>", `"a b"@x.y`, "a@[1.2.3.4]", "a@İ.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { fuzzIdempotent(t, Email, s) })
}

func FuzzPhone(f *testing.F) {
	for _, s := range []string{"+14155550123", "+1 (415) 555-0123", "+44 (0)20 7946 0018", "+390612345678", "+1 415 555 0123 ext 4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { fuzzIdempotent(t, Phone, s) })
}

func FuzzAPNsToken(f *testing.F) {
	f.Add(strings.Repeat("0123456789ABCDEF", 4))
	f.Add(strings.Repeat("g", 64))
	f.Fuzz(func(t *testing.T, s string) { fuzzIdempotent(t, APNsToken, s) })
}

func FuzzFCMToken(f *testing.F) {
	f.Add("dGVzdA:APA91bH-x_Y9")
	f.Add(" a b ")
	f.Fuzz(func(t *testing.T, s string) { fuzzIdempotent(t, FCMToken, s) })
}

// fuzzIdempotent checks that fn does not panic, that what it accepts it returns as valid UTF-8
// that fn accepts unchanged, and that what it rejects it rejects with a short reason.
func fuzzIdempotent(t *testing.T, fn func(string) (string, error), s string) {
	got, err := fn(s)
	if err != nil {
		checkReason(t, err)
		return
	}
	if !utf8.ValidString(got) {
		t.Fatalf("normalised %q to invalid UTF-8 %q", s, got)
	}
	again, err := fn(got)
	if err != nil {
		t.Fatalf("normalised %q to %q, which is rejected: %v", s, got, err)
	}
	if again != got {
		t.Fatalf("normalised %q to %q, then to %q", s, got, again)
	}
}
