package rpc

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/templates"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
)

// CreateTemplate implements TemplateService.CreateTemplate.
func (s *Server) CreateTemplate(ctx context.Context, req *heraldv1.CreateTemplateRequest) (*heraldv1.CreateTemplateResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	t := req.GetTemplate()
	if t == nil {
		return nil, errs.Field("template", "is required")
	}
	var v errs.Violations
	if !v.Count("template.locales", len(t.GetLocales()), notifier.MaxTranslations) {
		return nil, v.Err()
	}
	in := &notifier.Template{
		Name:        t.GetName(),
		Description: t.GetDescription(),
		Parts:       partsDomain(t.GetParts()),
	}
	for _, l := range t.GetLocales() {
		in.Locales = append(in.Locales, templates.Translation{Locale: l.GetLocale(), Parts: partsDomain(l.GetParts())})
	}
	stored, err := s.Templates.CreateTemplate(ctx, c, in)
	if err != nil {
		return nil, err
	}
	return &heraldv1.CreateTemplateResponse{Template: templateProto(stored)}, nil
}

// GetTemplate implements TemplateService.GetTemplate.
func (s *Server) GetTemplate(ctx context.Context, req *heraldv1.GetTemplateRequest) (*heraldv1.GetTemplateResponse, error) {
	if req.Version != nil && req.GetVersion() <= 0 {
		return nil, errs.Field("version", "must be positive")
	}
	t, err := s.Templates.GetTemplate(ctx, req.GetName(), int(req.GetVersion()))
	if err != nil {
		return nil, err
	}
	return &heraldv1.GetTemplateResponse{Template: templateProto(t)}, nil
}

// RenderTemplate implements TemplateService.RenderTemplate.
func (s *Server) RenderTemplate(ctx context.Context, req *heraldv1.RenderTemplateRequest) (*heraldv1.RenderTemplateResponse, error) {
	if req.Version != nil && req.GetVersion() <= 0 {
		return nil, errs.Field("version", "must be positive")
	}
	var data map[string]any
	if req.Data != nil {
		var v errs.Violations
		if !checkData(&v, "data", req.Data) {
			return nil, v.Err()
		}
		data = req.Data.AsMap()
	}
	p, err := s.Templates.RenderTemplate(ctx, req.GetName(), int(req.GetVersion()), req.GetLocale(), data)
	if err != nil {
		return nil, err
	}
	r := p.Content
	return &heraldv1.RenderTemplateResponse{
		Content: &heraldv1.RenderedContent{
			PushTitle: r.PushTitle, PushBody: r.PushBody, SmsBody: r.SMSBody,
			EmailSubject: r.EmailSubject, EmailHtml: r.EmailHTML, EmailText: r.EmailText,
		},
		Locale:      p.Locale,
		Version:     int32(p.Version),
		SmsEncoding: p.SMSEncoding,
		SmsSegments: int32(p.SMSSegments),
	}, nil
}

func partsDomain(p *heraldv1.TemplateParts) templates.Parts {
	return templates.Parts{
		PushTitle: p.GetPushTitle(), PushBody: p.GetPushBody(), SMSBody: p.GetSmsBody(),
		EmailSubject: p.GetEmailSubject(), EmailHTML: p.GetEmailHtml(), EmailText: p.GetEmailText(),
	}
}

func partsProto(p templates.Parts) *heraldv1.TemplateParts {
	return &heraldv1.TemplateParts{
		PushTitle: p.PushTitle, PushBody: p.PushBody, SmsBody: p.SMSBody,
		EmailSubject: p.EmailSubject, EmailHtml: p.EmailHTML, EmailText: p.EmailText,
	}
}

func templateProto(t *notifier.Template) *heraldv1.Template {
	out := &heraldv1.Template{
		Name:        t.Name,
		Version:     int32(t.Version),
		Description: t.Description,
		Parts:       partsProto(t.Parts),
		CreateTime:  timestamppb.New(t.CreatedAt),
	}
	for _, l := range t.Locales {
		out.Locales = append(out.Locales, &heraldv1.LocalizedParts{Locale: l.Locale, Parts: partsProto(l.Parts)})
	}
	return out
}
