//! People, not machines: whether an open or a click looks like a person's, judged as it
//! arrives, from what the request shows and when it comes. Nothing here keeps the address or
//! the user agent: the judgement's reason is all that is stored (kannon-email/kannon#412 asks
//! for exactly that).
//!
//! A machine's fetch is:
//! - an image proxy fetching on delivery: Apple Mail Privacy Protection (Apple's own network,
//!   17.0.0.0/8, announcing itself as a bare `Mozilla/5.0`), Google's image proxy
//!   (`GoogleImageProxy`, via ggpht.com) and Yahoo's (`YahooMailProxy`);
//! - a known link scanner or previewer (Barracuda, Mimecast, Proofpoint, Microsoft Defender's
//!   Safe Links, link-expanding chat bots, HTTP libraries…), or a request with no user agent;
//! - a `HEAD` request (a browser following a link sends `GET`);
//! - a fetch within [`FRESH`] of the email leaving (scanners and proxies fetch on delivery);
//! - a second link of one email followed within [`BURST`] of another (a scanner follows
//!   every link at once; a person reads).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};

/// How long after an email left a fetch is still taken for a machine's.
pub const FRESH: Duration = Duration::seconds(5);
/// Two links of one email followed closer together than this: a scanner.
pub const BURST: StdDuration = StdDuration::from_secs(2);
/// Messages remembered for [`Recent`] at most (older ones are forgotten first).
const REMEMBERED: usize = 10_000;

/// User-agent fragments (lower case) of machines that fetch images or follow links.
const MACHINE_AGENTS: [(&str, &str); 24] = [
    ("googleimageproxy", "Google's image proxy"),
    ("ggpht.com", "Google's image proxy"),
    ("yahoomailproxy", "Yahoo's image proxy"),
    ("barracuda", "a link scanner (Barracuda)"),
    ("mimecast", "a link scanner (Mimecast)"),
    ("proofpoint", "a link scanner (Proofpoint)"),
    ("safelinks", "a link scanner (Microsoft Safe Links)"),
    ("zscaler", "a link scanner (Zscaler)"),
    ("forcepoint", "a link scanner (Forcepoint)"),
    ("symantec", "a link scanner (Symantec)"),
    ("trendmicro", "a link scanner (Trend Micro)"),
    ("ironport", "a link scanner (Cisco IronPort)"),
    ("bot", "a bot"),
    ("crawler", "a crawler"),
    ("spider", "a crawler"),
    ("facebookexternalhit", "a link previewer"),
    ("whatsapp", "a link previewer"),
    ("headlesschrome", "a headless browser"),
    ("python-requests", "an HTTP library"),
    ("curl/", "an HTTP library"),
    ("wget", "an HTTP library"),
    ("go-http-client", "an HTTP library"),
    ("okhttp", "an HTTP library"),
    ("java/", "an HTTP library"),
];

/// What the request shows (read, judged, then dropped).
pub struct Seen<'a> {
    pub head: bool,
    pub user_agent: Option<&'a str>,
    pub ip: IpAddr,
}

/// Why this request looks like a machine's, if it does.
pub fn machine(seen: &Seen<'_>) -> Option<String> {
    if seen.head {
        return Some("a HEAD request".into());
    }
    let agent = seen.user_agent.map(str::trim).unwrap_or_default();
    if agent.is_empty() {
        return Some("no user agent".into());
    }
    if apple(seen.ip) && agent == "Mozilla/5.0" {
        return Some("Apple Mail Privacy Protection".into());
    }
    let lower = agent.to_ascii_lowercase();
    MACHINE_AGENTS
        .iter()
        .find(|(fragment, _)| lower.contains(fragment))
        .map(|(_, who)| (*who).to_string())
}

/// A fetch `at` sooner than [`FRESH`] after the email left at `sent_at`.
pub fn too_soon(sent_at: DateTime<Utc>, at: DateTime<Utc>) -> Option<String> {
    let after = at - sent_at;
    (after < FRESH).then(|| format!("{} s after delivery", after.num_seconds().max(0)))
}

/// Apple's network, 17.0.0.0/8 (Apple's own allocation, where its mail proxies fetch from).
fn apple(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 17,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.octets()[0] == 17),
    }
}

/// The links of each email followed lately, to tell a scanner's burst from a person.
#[derive(Default)]
pub struct Recent {
    seen: Mutex<HashMap<u64, (Instant, usize)>>,
}

impl Recent {
    /// Records link `index` of message `message` followed `now`; a machine's burst if another
    /// link of it was followed less than [`BURST`] ago.
    pub fn burst(&self, message: u64, index: usize, now: Instant) -> Option<String> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.len() >= REMEMBERED {
            seen.retain(|_, (at, _)| now.duration_since(*at) < BURST);
        }
        let before = seen.insert(message, (now, index));
        before
            .filter(|(at, other)| *other != index && now.duration_since(*at) < BURST)
            .map(|_| "several links of one email followed at once".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(agent: Option<&str>, ip: &str) -> Option<String> {
        machine(&Seen {
            head: false,
            user_agent: agent,
            ip: ip.parse().unwrap(),
        })
    }

    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

    #[test]
    fn people_and_machines() {
        assert_eq!(seen(Some(FIREFOX), "192.0.2.7"), None);
        assert_eq!(
            seen(Some("Mozilla/5.0"), "17.58.1.2").as_deref(),
            Some("Apple Mail Privacy Protection")
        );
        assert_eq!(
            seen(
                Some("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"),
                "66.249.84.1"
            )
            .as_deref(),
            Some("Google's image proxy")
        );
        assert_eq!(seen(None, "192.0.2.7").as_deref(), Some("no user agent"));
        assert_eq!(
            seen(Some("python-requests/2.31"), "192.0.2.7").as_deref(),
            Some("an HTTP library")
        );
        let head = machine(&Seen {
            head: true,
            user_agent: Some(FIREFOX),
            ip: "192.0.2.7".parse().unwrap(),
        });
        assert_eq!(head.as_deref(), Some("a HEAD request"));
    }

    #[test]
    fn fresh_fetches_and_bursts_are_machines() {
        let sent = Utc::now();
        assert!(too_soon(sent, sent + Duration::seconds(1)).is_some());
        assert!(too_soon(sent, sent + Duration::seconds(60)).is_none());
        let recent = Recent::default();
        let now = Instant::now();
        assert_eq!(recent.burst(1, 0, now), None);
        assert_eq!(
            recent.burst(1, 0, now),
            None,
            "the same link again is no burst"
        );
        assert!(recent.burst(1, 1, now).is_some());
        assert_eq!(recent.burst(2, 1, now), None, "another email");
        assert_eq!(recent.burst(1, 2, now + BURST * 2), None);
    }
}
