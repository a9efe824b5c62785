package links

import (
	"strings"
	"sync"
	"sync/atomic"
)

// Why a click was counted apart from people's.
const (
	// BotAgent: the user agent is a crawler, a link previewer or a mail scanner.
	BotAgent = "agent"
	// BotTiming: the click came sooner after the delivery than a person reads a message (a
	// scanner that follows every link on arrival).
	BotTiming = "timing"
)

// botAgents are lower-case pieces of the user agents of crawlers, chat and social link
// previewers, and mail security scanners. Clients that are not browsers at all (curl, HTTP
// libraries) count as bots too: a person clicks in a browser or an app's web view.
var botAgents = []string{
	"bot", "crawl", "spider", "slurp", "preview", "scan", "check", "monitor", "fetch", "headless",
	"facebookexternalhit", "facebookcatalog", "whatsapp", "telegram", "slack", "discord", "skype",
	"linkedin", "pinterest", "embedly", "quora link", "vkshare", "redditbot", "applebot",
	"bitlybot", "outlook", "microsoft office", "ms-office", "mimecast", "proofpoint", "barracuda",
	"symantec", "forcepoint", "trendmicro", "sophos", "fireeye", "safelinks", "urldefense",
	"google-read-aloud", "googleimageproxy", "yahoomailproxy", "curl/", "wget/", "go-http-client",
	"python-requests", "python-urllib", "aiohttp", "java/", "okhttp", "libwww", "httpclient",
	"node-fetch", "axios/", "postman",
}

// IsBot reports whether a user agent is a bot or link previewer. An empty user agent is one:
// every browser sends one. Answers are remembered: a few thousand user agents make nearly all
// the traffic, and matching one against the list costs more than the rest of a redirect.
func IsBot(userAgent string) bool {
	if userAgent == "" {
		return true
	}
	if v, ok := botSeen.Load(userAgent); ok {
		return v.(bool)
	}
	bot := isBot(userAgent)
	if len(userAgent) <= 512 {
		if botSeenCount.Add(1) > maxBotSeen { // forget them all, rather than keep every agent ever seen
			botSeen.Clear()
			botSeenCount.Store(0)
		}
		botSeen.Store(userAgent, bot)
	}
	return bot
}

// maxBotSeen bounds the user agents IsBot remembers.
const maxBotSeen = 10_000

var (
	botSeen      sync.Map // user agent -> bool
	botSeenCount atomic.Int64
)

func isBot(userAgent string) bool {
	ua := strings.ToLower(userAgent)
	for _, b := range botAgents {
		if strings.Contains(ua, b) {
			return true
		}
	}
	return false
}
