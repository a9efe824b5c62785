// Package rpc serves ContactsService over gRPC: it turns protos into domain calls and back.
package rpc

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/heraldhq/herald/internal/errs"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/contacts"
)

// Server implements heraldv1.ContactsServiceServer on a contacts.Service.
type Server struct {
	heraldv1.UnimplementedContactsServiceServer
	Service *contacts.Service
}

// UpsertUser implements ContactsService.UpsertUser.
func (s *Server) UpsertUser(ctx context.Context, req *heraldv1.UpsertUserRequest) (*heraldv1.UpsertUserResponse, error) {
	u := req.GetUser()
	if u == nil {
		return nil, errs.Field("user", "is required")
	}
	stored, err := s.Service.UpsertUser(ctx, &contacts.User{
		ID: u.GetUserId(), Email: u.GetEmail(), Phone: u.GetPhone(), Locale: u.GetLocale(), Timezone: u.GetTimezone(),
	})
	if err != nil {
		return nil, err
	}
	return &heraldv1.UpsertUserResponse{User: userProto(stored)}, nil
}

// GetUser implements ContactsService.GetUser.
func (s *Server) GetUser(ctx context.Context, req *heraldv1.GetUserRequest) (*heraldv1.GetUserResponse, error) {
	u, err := s.Service.GetUser(ctx, req.GetUserId())
	if err != nil {
		return nil, err
	}
	return &heraldv1.GetUserResponse{User: userProto(u)}, nil
}

// DeleteUser implements ContactsService.DeleteUser.
func (s *Server) DeleteUser(ctx context.Context, req *heraldv1.DeleteUserRequest) (*heraldv1.DeleteUserResponse, error) {
	if err := s.Service.DeleteUser(ctx, req.GetUserId()); err != nil {
		return nil, err
	}
	return &heraldv1.DeleteUserResponse{}, nil
}

// BatchGetUsers implements ContactsService.BatchGetUsers.
func (s *Server) BatchGetUsers(ctx context.Context, req *heraldv1.BatchGetUsersRequest) (*heraldv1.BatchGetUsersResponse, error) {
	users, err := s.Service.BatchGetUsers(ctx, req.GetUserIds())
	if err != nil {
		return nil, err
	}
	out := &heraldv1.BatchGetUsersResponse{}
	for _, u := range users {
		out.Users = append(out.Users, userProto(u))
	}
	return out, nil
}

func userProto(u *contacts.User) *heraldv1.User {
	return &heraldv1.User{
		UserId: u.ID, Email: u.Email, Phone: u.Phone, Locale: u.Locale, Timezone: u.Timezone,
		CreateTime: timestamppb.New(u.CreatedAt), UpdateTime: timestamppb.New(u.UpdatedAt),
	}
}
