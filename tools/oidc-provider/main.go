// Command oidc-provider is the OpenID Provider that Fleetgate's tests sign in through.
//
// It is the OpenID Foundation certified provider library github.com/zitadel/oidc/v3 (its example
// server's in-memory storage and login page, unchanged, from the Go module proxy) with users, their
// groups and the clients read from a JSON file, so that a test decides who may sign in. This file adds
// only what the example lacks: a `groups` claim (in the ID token when the `groups` scope is asked for,
// and from the userinfo endpoint), the profile claims in the ID token as most providers send them, and a
// per-client ID token lifetime (a test needs a token that expires).
//
// Dex, the provider the issue names, is not served by the module proxy at any version with groups for
// static users (see docs/operations.md, "Single sign-on").
//
// Usage: oidc-provider -config provider.json   (listens on the config's "listen" address)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

type clientConfig struct {
	ID                     string   `json:"id"`
	Secret                 string   `json:"secret"`
	RedirectURIs           []string `json:"redirect_uris"`
	IDTokenLifetimeSeconds int      `json:"id_token_lifetime_seconds"`
}

type userConfig struct {
	ID        string   `json:"id"`
	Username  string   `json:"username"`
	Password  string   `json:"password"`
	Email     string   `json:"email"`
	FirstName string   `json:"first_name"`
	LastName  string   `json:"last_name"`
	Groups    []string `json:"groups"`
}

type config struct {
	Issuer  string         `json:"issuer"`
	Listen  string         `json:"listen"`
	Clients []clientConfig `json:"clients"`
	Users   []userConfig   `json:"users"`
}

// users implements the example storage's UserStore from the config.
type users struct {
	byID   map[string]*storage.User
	byName map[string]*storage.User
	groups map[string][]string
}

func (u users) GetUserByID(id string) *storage.User         { return u.byID[id] }
func (u users) GetUserByUsername(name string) *storage.User { return u.byName[name] }
func (u users) ExampleClientID() string                     { return "" }

// client gives one configured client its ID token lifetime and profile claims in the ID token.
type client struct {
	op.Client
	lifetime time.Duration
}

func (c client) IDTokenLifetime() time.Duration       { return c.lifetime }
func (c client) IDTokenUserinfoClaimsAssertion() bool { return true }

// IsScopeAllowed lets clients ask for the `groups` scope (the example allows only its own custom scope).
func (c client) IsScopeAllowed(scope string) bool {
	return scope == "groups" || c.Client.IsScopeAllowed(scope)
}

// store is the example's in-memory storage plus the groups claim and the per-client lifetimes.
type store struct {
	*storage.Storage
	users     users
	lifetimes map[string]time.Duration
}

func (s *store) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return client{Client: c, lifetime: s.lifetimes[id]}, nil
}

func (s *store) addGroups(info *oidc.UserInfo, userID string, scopes []string) {
	if scopes == nil || slices.Contains(scopes, "groups") {
		info.AppendClaims("groups", append([]string{}, s.users.groups[userID]...))
	}
}

func (s *store) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, info, req, scopes); err != nil {
		return err
	}
	s.addGroups(info, req.GetSubject(), scopes)
	return nil
}

func (s *store) SetUserinfoFromToken(ctx context.Context, info *oidc.UserInfo, tokenID, subject, origin string) error {
	if err := s.Storage.SetUserinfoFromToken(ctx, info, tokenID, subject, origin); err != nil {
		return err
	}
	s.addGroups(info, subject, nil)
	return nil
}

func load(path string) (*config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cfg config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if cfg.Issuer == "" || cfg.Listen == "" || len(cfg.Clients) == 0 {
		return nil, fmt.Errorf("%s: issuer, listen and at least one client are required", path)
	}
	return &cfg, nil
}

func main() {
	path := flag.String("config", "", "JSON file with issuer, listen, clients and users")
	flag.Parse()
	cfg, err := load(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "oidc-provider:", err)
		os.Exit(2)
	}
	us := users{byID: map[string]*storage.User{}, byName: map[string]*storage.User{}, groups: map[string][]string{}}
	for _, u := range cfg.Users {
		user := &storage.User{
			ID: u.ID, Username: u.Username, Password: u.Password, FirstName: u.FirstName, LastName: u.LastName,
			Email: u.Email, EmailVerified: u.Email != "", PreferredLanguage: language.English,
		}
		us.byID[u.ID], us.byName[u.Username], us.groups[u.ID] = user, user, u.Groups
	}
	lifetimes := map[string]time.Duration{}
	var clients []*storage.Client
	for _, c := range cfg.Clients {
		clients = append(clients, storage.WebClient(c.ID, c.Secret, c.RedirectURIs...))
		lifetimes[c.ID] = time.Hour
		if c.IDTokenLifetimeSeconds > 0 {
			lifetimes[c.ID] = time.Duration(c.IDTokenLifetimeSeconds) * time.Second
		}
	}
	storage.RegisterClients(clients...)
	s := &store{Storage: storage.NewStorage(us), users: us, lifetimes: lifetimes}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	router := exampleop.SetupServer(cfg.Issuer, s, logger, false)
	server := &http.Server{Addr: cfg.Listen, Handler: router, ReadHeaderTimeout: 10 * time.Second}
	logger.Info("oidc-provider listening", "issuer", cfg.Issuer, "addr", cfg.Listen)
	if err := server.ListenAndServe(); err != http.ErrServerClosed {
		logger.Error("server stopped", "error", err)
		os.Exit(1)
	}
}
