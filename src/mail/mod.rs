//! Mail: handlebars templates (HTML and text), rendering for a lead, and composing the MIME
//! message the daemon sends.
