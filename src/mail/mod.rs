//! Mail: handlebars templates (HTML and text), rendering for a lead, and composing the MIME
//! message the daemon sends.
//!
//! - [`templates`]: loading `templates/` (every template and partial compiled up front, in two
//!   registries: HTML escaped, text not), strict rendering, subjects, and the `nurture check`
//!   warnings about fields a lead may lack.
//! - [`render`]: what a template sees (the context built from a lead), the rendered body, and the
//!   render error a marketer can act on.
//! - [`date_helper`]: `{{date offer_ends "long"}}`, a date on the lead's clock in their language.
//! - [`personalize`]: one planned email rendered for one lead (daemon and dry-run alike).
//! - [`links`]: named links, and click and open tracking (links rewritten to signed tokens).
//! - [`link_plan`]: where each template's links go, worked out once at load, so that a tracked
//!   email skips the HTML tokenizer.
//! - [`compose`]: the outgoing email (headers, Message-ID, List-Unsubscribe) and its RFC 5322
//!   form through lettre.
//! - [`dkim`]: the DKIM signature put on each email as it leaves, when `[dkim]` is set.
//!
//! Rule of the module: lead data is escaped in HTML, never in text, and can never create a
//! header: every header value that may carry lead data goes through [`compose::header_text`].

pub mod classify;
pub mod compose;
pub mod date_helper;
pub mod dkim;
pub mod imap;
pub mod link_plan;
pub mod links;
pub mod personalize;
pub mod render;
pub mod templates;

pub use self::compose::{ComposeError, OutgoingEmail};
pub use self::render::{RenderError, RenderedBody, context};
pub use self::templates::Templates;
