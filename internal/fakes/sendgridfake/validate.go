package sendgridfake

import (
	"encoding/json"
	"fmt"
	netmail "net/mail"
	"strings"
)

// mailRequest is the v3 Mail Send body. Every field SendGrid documents is listed, so that the
// strict decoder rejects misspelt names; the fields the fake does not check stay raw.
type mailRequest struct {
	Personalizations []personalization `json:"personalizations"`
	From             *address          `json:"from"`
	ReplyTo          *address          `json:"reply_to"`
	ReplyToList      []address         `json:"reply_to_list"`
	Subject          string            `json:"subject"`
	Content          []content         `json:"content"`
	Attachments      json.RawMessage   `json:"attachments"`
	TemplateID       string            `json:"template_id"`
	Sections         map[string]string `json:"sections"`
	Headers          map[string]string `json:"headers"`
	Categories       []string          `json:"categories"`
	CustomArgs       map[string]string `json:"custom_args"`
	SendAt           int64             `json:"send_at"`
	BatchID          string            `json:"batch_id"`
	ASM              json.RawMessage   `json:"asm"`
	IPPoolName       string            `json:"ip_pool_name"`
	MailSettings     json.RawMessage   `json:"mail_settings"`
	TrackingSettings json.RawMessage   `json:"tracking_settings"`
}

type personalization struct {
	To                  []address         `json:"to"`
	CC                  []address         `json:"cc"`
	BCC                 []address         `json:"bcc"`
	From                *address          `json:"from"`
	Subject             string            `json:"subject"`
	Headers             map[string]string `json:"headers"`
	Substitutions       map[string]string `json:"substitutions"`
	DynamicTemplateData json.RawMessage   `json:"dynamic_template_data"`
	CustomArgs          map[string]string `json:"custom_args"`
	Categories          []string          `json:"categories"`
	SendAt              int64             `json:"send_at"`
}

type address struct {
	Email string `json:"email"`
	Name  string `json:"name"`
}

type content struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// maxCustomArgsBytes is SendGrid's limit on the custom_args of one personalization, request
// level included.
const maxCustomArgsBytes = 10000

// validate checks what SendGrid checks before accepting a message, with SendGrid's messages
// and field paths.
func (r *mailRequest) validate() []apiError {
	var errs []apiError
	if len(r.Personalizations) == 0 {
		errs = append(errs, fieldError("personalizations",
			"The personalizations field is required and must have at least one personalization."))
	}
	if len(r.Personalizations) > 1000 {
		errs = append(errs, fieldError("personalizations", fmt.Sprintf(
			"The personalization block is limited to 1000 personalizations per API request. You have provided %d personalizations.",
			len(r.Personalizations))))
	}
	everySubject := len(r.Personalizations) > 0
	for i, p := range r.Personalizations {
		field := fmt.Sprintf("personalizations.%d", i)
		if len(p.To) == 0 {
			errs = append(errs, fieldError(field+".to",
				"The to array is required for all personalization objects, and must have at least one email object with a valid email address."))
		}
		for j, a := range p.To {
			if !validEmail(a.Email) {
				errs = append(errs, fieldError(fmt.Sprintf("%s.to.%d.email", field, j),
					"Does not contain a valid address."))
			}
		}
		for j, a := range p.CC {
			if !validEmail(a.Email) {
				errs = append(errs, fieldError(fmt.Sprintf("%s.cc.%d.email", field, j),
					"Does not contain a valid address."))
			}
		}
		for j, a := range p.BCC {
			if !validEmail(a.Email) {
				errs = append(errs, fieldError(fmt.Sprintf("%s.bcc.%d.email", field, j),
					"Does not contain a valid address."))
			}
		}
		if p.From != nil && !validEmail(p.From.Email) {
			errs = append(errs, fieldError(field+".from.email", "Does not contain a valid address."))
		}
		if p.Subject == "" {
			everySubject = false
		}
		if customArgsSize(r.CustomArgs, p.CustomArgs) > maxCustomArgsBytes {
			errs = append(errs, fieldError(field+".custom_args",
				"The custom_args of a personalization, request level included, may not exceed 10,000 bytes."))
		}
	}
	if r.From == nil || r.From.Email == "" {
		errs = append(errs, fieldError("from.email",
			`The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.  e.g. {"email" : "example@example.com"}  or {"email" : "example@example.com", "name" : "Example Recipient"}.`))
	} else if !validEmail(r.From.Email) {
		errs = append(errs, fieldError("from.email", "The from email does not contain a valid address."))
	}
	if r.ReplyTo != nil && !validEmail(r.ReplyTo.Email) {
		errs = append(errs, fieldError("reply_to.email", "The reply_to email does not contain a valid address."))
	}
	if r.Subject == "" && !everySubject && r.TemplateID == "" {
		errs = append(errs, fieldError("subject",
			"The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined."))
	}
	if len(r.Content) == 0 && r.TemplateID == "" {
		errs = append(errs, fieldError("content",
			"Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block. We typically suggest both text/plain and text/html blocks are included, but only one block is required."))
	}
	for i, c := range r.Content {
		field := fmt.Sprintf("content.%d", i)
		if c.Type == "" || strings.ContainsAny(c.Type, ";\r\n") {
			errs = append(errs, fieldError(field+".type",
				"The content type cannot contain ';', or CRLF characters and must contain at least one character."))
		}
		if c.Value == "" {
			errs = append(errs, fieldError(field+".value",
				"The content value must be a string at least one character in length."))
		}
	}
	if !contentOrdered(r.Content) {
		errs = append(errs, fieldError("content",
			"If present, text/plain content must be first, followed by text/html, followed by any other content."))
	}
	if len(r.Categories) > 10 {
		errs = append(errs, fieldError("categories", "You may not have more than 10 categories per request."))
	}
	for i, c := range r.Categories {
		if c == "" || len(c) > 255 || !ascii(c) {
			errs = append(errs, fieldError(fmt.Sprintf("categories.%d", i),
				"A category must be a non-empty ASCII string of at most 255 characters."))
		}
	}
	return errs
}

// contentOrdered reports whether text/plain (if any) comes first and text/html (if any) right
// after it.
func contentOrdered(cs []content) bool {
	want := 0
	for i, c := range cs {
		switch c.Type {
		case "text/plain":
			if i != 0 {
				return false
			}
			want = 1
		case "text/html":
			if i != want {
				return false
			}
		}
	}
	return true
}

// validEmail accepts a bare address (no display name, no angle brackets), as SendGrid's email
// fields do.
func validEmail(s string) bool {
	if s == "" || strings.ContainsAny(s, " <>\r\n") {
		return false
	}
	a, err := netmail.ParseAddress(s)
	return err == nil && a.Address == s && a.Name == ""
}

func customArgsSize(maps ...map[string]string) int {
	n := 0
	for _, m := range maps {
		for k, v := range m {
			n += len(k) + len(v)
		}
	}
	return n
}

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
