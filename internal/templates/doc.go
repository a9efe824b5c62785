// Package templates parses, validates and renders Herald's notification templates.
//
// A template has up to six parts (Parts): a push title and body, an SMS body, and an email
// subject, HTML body and text body. The HTML body is an html/template, so data is escaped for
// the context it lands in (element text, attribute, URL, script); the other parts are
// text/templates and are not escaped. Data is the JSON object a caller sent with the
// notification (google.protobuf.Struct as map[string]any): a key the template names but the data
// lacks is an error, and a JSON null renders as nothing.
//
// A template version may also carry translations (ParseSet, Set): parts per BCP 47 locale,
// compared in canonical form so that "pt-br" is "pt-BR". A recipient's locale falls back by
// dropping subtags ("pt-BR", then "pt"), then to the default parts (Set.Resolve). A translation
// must have exactly the parts the default has, so a message never mixes languages and the
// channels a template serves do not depend on the locale.
//
// Check holds a rendered message to what the channels take: a push payload of at most
// MaxPushPayload bytes on APNs and on FCM, counted as the workers build them with the data;
// an SMS body of at most Limits.SMSSegments segments, counted per GSM 03.38 (GSM-7, or UCS-2
// as soon as one character is outside the GSM alphabet) by SMSSegments; a subject of at most
// MaxSubject characters; email bodies of at most MaxEmailBody bytes. Set.CheckStatic applies
// the same limits when a template is created, to the parts that render the same text every time.
//
// Templates come from outside (apps create them through the API), so Parse and Render treat
// them as hostile:
//
//   - Each part's source is at most MaxSourceSize bytes of UTF-8, and each rendered part at most
//     MaxOutputSize bytes; a render that would write more stops with ErrOutputTooLarge.
//   - {{define}}, {{block}} and {{template}} are refused, so there is no recursion; every action
//     runs at most once per iteration of the ranges around it.
//   - Each iteration of a {{range}} is charged a fixed cost plus the size of its body, and the
//     text built by printf, print, println, html, js and urlquery is charged by the byte; a render
//     that spends more than its budget (MaxWork, MaxBuilt) stops with ErrTooMuchWork. printf
//     refuses '*' widths, widths and precisions adding up to more than 1000, and list or object
//     arguments, so no single call can build a huge string.
//   - Only text/template's builtin functions exist, some replaced by the bounded versions above:
//     nothing reads files, the environment or the network. The builtin call runs functions found
//     in the data, and JSON data holds none; a Go caller must not put functions (or types with
//     methods) in the data.
//   - Errors quote template source and type names but never string, list or object data: range
//     over a non-list, and eq or ne on lists or objects (which compare only with null), fail with
//     messages of this package's own rather than text/template's, which quote the value.
//   - Rendered text is valid UTF-8 without NUL, so it can be stored as PostgreSQL text.
//
// What remains unbounded by the package is the cost of builtins that scan their arguments (eq,
// lt and the like on long strings) times the work budget, so callers should also bound the size
// of the data they accept.
//
// The subject renders to one line: a subject with a line break or other control character,
// whether from the template or the data, is an error, so data cannot inject mail headers.
package templates
