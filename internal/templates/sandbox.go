package templates

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
)

// The sandbox rewrites a parsed tree so that rendering is bounded and leaks no data in errors:
//
//   - the root starts with {{$herald budget := _heraldBudget}}, a fresh budget per execution
//     (templates cannot name the variable: it has a space in it);
//   - every range body starts with {{$herald tick := _heraldTick $herald budget N}}, which
//     charges N per iteration: iterationCost plus the size of the body;
//   - every range pipeline ends in a call of the function "range" (which no template can name, as
//     range is a keyword), which rejects what text/template cannot range over with a message that,
//     unlike text/template's, does not quote the value;
//   - printf, print, println, html, js and urlquery get the budget as their first argument and
//     are replaced by versions that charge what they build;
//   - in text parts every printing action ends in _heraldText, so a JSON null prints as nothing
//     rather than text/template's "<no value>" (html/template already prints nothing).
//
// eq and ne are replaced too, because the builtins quote lists and objects in their errors.
//
// Declarations print nothing, in text/template and html/template alike, which is why the budget
// and the tick are declarations. The funcs are added after parsing, so a template that names
// them fails to parse.
const (
	budgetVar = "$herald budget"
	tickVar   = "$herald tick"

	fnBudget   = "_heraldBudget"
	fnTick     = "_heraldTick"
	fnIterable = "range" // so errors read "error calling range"; no template can call it
	fnText     = "_heraldText"
)

// iterationCost is what an iteration costs beyond its body's nodes: an empty iteration takes
// about as long as running a dozen nodes.
const iterationCost = 16

// maxPad bounds the sum of the widths and precisions in one printf format, so that no verb pads
// an argument into a huge string before the budget can see it.
const maxPad = 1000

var (
	errNotIterable = errors.New("range needs a list, an object or an integer")
	errStarWidth   = errors.New("'*' widths and precisions are not supported")
	errPad         = fmt.Errorf("widths and precisions add up to more than %d", maxPad)
	errPrintfArg   = errors.New("arguments must be strings, numbers, booleans or null")
	errNoCompare   = errors.New("missing argument for comparison")
	errCompareKind = errors.New("can compare only strings, numbers and booleans, or anything with null")
)

// sandbox checks a freshly parsed tree and rewrites it as described above. html says the tree
// belongs to an html/template; subject that it is the email subject.
func sandbox(tree *parse.Tree, html, subject bool) error {
	s := &sandboxer{html: html, subject: subject}
	s.list(tree.Root)
	if s.err != nil {
		return s.err
	}
	pos, line := tree.Root.Pos, 1
	start := declare(pos, line, budgetVar, command(pos, parse.NewIdentifier(fnBudget).SetPos(pos)))
	tree.Root.Nodes = slices.Insert(tree.Root.Nodes, 0, parse.Node(start))
	return nil
}

type sandboxer struct {
	html, subject bool
	err           error
}

func (s *sandboxer) fail(err error) {
	if s.err == nil {
		s.err = err
	}
}

func (s *sandboxer) list(l *parse.ListNode) {
	if l == nil {
		return
	}
	for _, n := range l.Nodes {
		s.node(n)
	}
}

func (s *sandboxer) node(n parse.Node) {
	switch n := n.(type) {
	case *parse.TextNode:
		if s.subject && strings.ContainsAny(string(n.Text), "\r\n") {
			s.fail(errSubjectLines)
		}
	case *parse.TemplateNode:
		s.fail(errDefine)
	case *parse.ActionNode:
		s.pipe(n.Pipe)
		if !s.html && len(n.Pipe.Decl) == 0 {
			n.Pipe.Cmds = append(n.Pipe.Cmds, command(n.Pos, parse.NewIdentifier(fnText).SetPos(n.Pos)))
		}
	case *parse.IfNode:
		s.branch(&n.BranchNode)
	case *parse.WithNode:
		s.branch(&n.BranchNode)
	case *parse.RangeNode:
		s.branch(&n.BranchNode)
		pos := n.Pos
		n.Pipe.Cmds = append(n.Pipe.Cmds, command(pos, parse.NewIdentifier(fnIterable).SetPos(pos)))
		if n.List == nil {
			n.List = &parse.ListNode{NodeType: parse.NodeList, Pos: pos}
		}
		c := iterationCost + size(n.List)
		cost := &parse.NumberNode{NodeType: parse.NodeNumber, Pos: pos, IsInt: true, Int64: int64(c), Text: strconv.Itoa(c)}
		budget := &parse.VariableNode{NodeType: parse.NodeVariable, Pos: pos, Ident: []string{budgetVar}}
		tick := declare(pos, n.Line, tickVar, command(pos, parse.NewIdentifier(fnTick).SetPos(pos), budget, cost))
		n.List.Nodes = slices.Insert(n.List.Nodes, 0, parse.Node(tick))
	}
}

func (s *sandboxer) branch(b *parse.BranchNode) {
	s.pipe(b.Pipe)
	s.list(b.List)
	s.list(b.ElseList)
}

func (s *sandboxer) pipe(p *parse.PipeNode) {
	if p == nil {
		return
	}
	for _, c := range p.Cmds {
		for _, a := range c.Args {
			s.arg(a)
		}
		id, ok := c.Args[0].(*parse.IdentifierNode)
		if !ok {
			continue
		}
		switch id.Ident {
		case "html", "js", "urlquery":
			if s.html {
				// html/template escapes by itself; these would escape twice, or not for the
				// context they are in.
				s.fail(errHTMLEscaper)
				continue
			}
			fallthrough
		case "printf", "print", "println":
			budget := &parse.VariableNode{NodeType: parse.NodeVariable, Pos: id.Pos, Ident: []string{budgetVar}}
			c.Args = slices.Insert(c.Args, 1, parse.Node(budget))
		}
	}
}

func (s *sandboxer) arg(n parse.Node) {
	switch n := n.(type) {
	case *parse.PipeNode:
		s.pipe(n)
	case *parse.ChainNode:
		s.arg(n.Node)
	}
}

// size counts the nodes under n: what one execution of n costs, roughly.
func size(n parse.Node) int {
	total := 1
	switch n := n.(type) {
	case *parse.ListNode:
		if n != nil {
			for _, c := range n.Nodes {
				total += size(c)
			}
		}
	case *parse.ActionNode:
		total += size(n.Pipe)
	case *parse.PipeNode:
		if n != nil {
			for _, c := range n.Cmds {
				total += size(c)
			}
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			total += size(a)
		}
	case *parse.ChainNode:
		total += size(n.Node)
	case *parse.IfNode:
		total += size(n.Pipe) + size(n.List) + size(n.ElseList)
	case *parse.WithNode:
		total += size(n.Pipe) + size(n.List) + size(n.ElseList)
	case *parse.RangeNode:
		total += size(n.Pipe) + size(n.List) + size(n.ElseList)
	}
	return total
}

func command(pos parse.Pos, args ...parse.Node) *parse.CommandNode {
	return &parse.CommandNode{NodeType: parse.NodeCommand, Pos: pos, Args: args}
}

// declare returns {{name := cmd}}, an action that prints nothing.
func declare(pos parse.Pos, line int, name string, cmd *parse.CommandNode) *parse.ActionNode {
	v := &parse.VariableNode{NodeType: parse.NodeVariable, Pos: pos, Ident: []string{name}}
	p := &parse.PipeNode{NodeType: parse.NodePipe, Pos: pos, Line: line, Decl: []*parse.VariableNode{v}, Cmds: []*parse.CommandNode{cmd}}
	return &parse.ActionNode{NodeType: parse.NodeAction, Pos: pos, Line: line, Pipe: p}
}

// budget is what one execution of one part has spent.
type budget struct {
	work  int // range body nodes run
	built int // bytes built by printf and its kin
}

func (b *budget) charge(work, built int) error {
	b.work += work
	b.built += built
	if b.work > MaxWork || b.built > MaxBuilt {
		return ErrTooMuchWork
	}
	return nil
}

func (b *budget) build(s string) (string, error) {
	if err := b.charge(0, len(s)); err != nil {
		return "", err
	}
	return s, nil
}

// funcs returns the functions the sandboxed trees call. For html/template parts html, js and
// urlquery stay the builtins: sandbox refuses them in commands, and named as a bare argument
// they run with no arguments and build nothing.
func funcs(html bool) map[string]any {
	m := map[string]any{
		fnBudget:   func() *budget { return new(budget) },
		fnTick:     func(b *budget, cost int) (string, error) { return "", b.charge(cost, 0) },
		fnIterable: iterable,
		fnText:     textValue,
		"printf":   sprintf,
		"print":    func(b *budget, args ...any) (string, error) { return b.build(fmt.Sprint(args...)) },
		"println":  func(b *budget, args ...any) (string, error) { return b.build(fmt.Sprintln(args...)) },
		"eq":       eq,
		"ne":       func(a, b reflect.Value) (bool, error) { equal, err := eq(a, b); return !equal, err },
	}
	if !html {
		m["html"] = func(b *budget, args ...any) (string, error) { return b.build(template.HTMLEscaper(args...)) }
		m["js"] = func(b *budget, args ...any) (string, error) { return b.build(template.JSEscaper(args...)) }
		m["urlquery"] = func(b *budget, args ...any) (string, error) { return b.build(template.URLQueryEscaper(args...)) }
	}
	return m
}

var (
	textFuncs = template.FuncMap(funcs(false))
	htmlFuncs = funcs(true)
)

func iterable(v any) (any, error) {
	if v == nil {
		return nil, nil // ranges over nothing, like text/template's nil
	}
	switch reflect.ValueOf(v).Kind() {
	case reflect.Slice, reflect.Array, reflect.Map,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return v, nil
	}
	return nil, errNotIterable
}

func textValue(v any) any {
	if v == nil {
		return ""
	}
	return v
}

// sprintf is printf with bounded padding and only scalar arguments: fmt applies a width to
// every element of a list, so a list argument could multiply a width by the data's size.
func sprintf(b *budget, format string, args ...any) (string, error) {
	if err := checkFormat(format); err != nil {
		return "", err
	}
	for _, a := range args {
		if !scalar(a) {
			return "", errPrintfArg
		}
	}
	return b.build(fmt.Sprintf(format, args...))
}

// checkFormat refuses '*' widths and precisions, and explicit ones that add up to more than
// maxPad. It counts every number in a verb, argument indexes too, which only errs on the safe
// side.
func checkFormat(format string) error {
	pad := 0
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
	verb:
		for i++; i < len(format); i++ {
			switch c := format[i]; {
			case c == '*':
				return errStarWidth
			case '0' <= c && c <= '9':
				n := 0
				for ; i < len(format) && '0' <= format[i] && format[i] <= '9'; i++ {
					if n = n*10 + int(format[i]-'0'); n > maxPad {
						return errPad
					}
				}
				if pad += n; pad > maxPad {
					return errPad
				}
				i--
			case strings.IndexByte("+-# .[]", c) >= 0:
			default:
				break verb // the verb itself, '%' included
			}
		}
	}
	return nil
}

func scalar(a any) bool {
	if a == nil {
		return true
	}
	switch reflect.ValueOf(a).Kind() {
	case reflect.Bool, reflect.String,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return true
	}
	return false
}

// eq is text/template's eq, except that lists and objects compare only with null: the builtin
// quotes them in its error message, and they are data.
func eq(a reflect.Value, bs ...reflect.Value) (bool, error) {
	if len(bs) == 0 {
		return false, errNoCompare
	}
	a = indirectInterface(a)
	for _, b := range bs {
		equal, err := equal(a, indirectInterface(b))
		if err != nil || equal {
			return equal, err
		}
	}
	return false, nil
}

func equal(a, b reflect.Value) (bool, error) {
	if isNil(a) || isNil(b) {
		return isNil(a) && isNil(b), nil
	}
	ka, kb := basicKind(a.Kind()), basicKind(b.Kind())
	switch {
	case ka == reflect.Invalid || kb == reflect.Invalid:
		return false, errCompareKind
	case ka == reflect.Int && kb == reflect.Uint:
		return a.Int() >= 0 && uint64(a.Int()) == b.Uint(), nil
	case ka == reflect.Uint && kb == reflect.Int:
		return b.Int() >= 0 && a.Uint() == uint64(b.Int()), nil
	case ka != kb:
		return false, fmt.Errorf("incompatible types for comparison: %v and %v", a.Type(), b.Type())
	}
	switch ka {
	case reflect.Bool:
		return a.Bool() == b.Bool(), nil
	case reflect.Int:
		return a.Int() == b.Int(), nil
	case reflect.Uint:
		return a.Uint() == b.Uint(), nil
	case reflect.Float64:
		return a.Float() == b.Float(), nil
	case reflect.Complex128:
		return a.Complex() == b.Complex(), nil
	default:
		return a.String() == b.String(), nil
	}
}

// basicKind groups the kinds eq compares by value; it returns reflect.Invalid for the others.
func basicKind(k reflect.Kind) reflect.Kind {
	switch k {
	case reflect.Bool, reflect.String:
		return k
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return reflect.Int
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return reflect.Uint
	case reflect.Float32, reflect.Float64:
		return reflect.Float64
	case reflect.Complex64, reflect.Complex128:
		return reflect.Complex128
	}
	return reflect.Invalid
}

func indirectInterface(v reflect.Value) reflect.Value {
	if v.Kind() == reflect.Interface && !v.IsNil() {
		return v.Elem()
	}
	return v
}

// isNil reports whether v is null: no value, or a nil list, object, pointer and the like.
func isNil(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Invalid:
		return true
	case reflect.Chan, reflect.Func, reflect.Interface, reflect.Map, reflect.Pointer, reflect.Slice:
		return v.IsNil()
	}
	return false
}
