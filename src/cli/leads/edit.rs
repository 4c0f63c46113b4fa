//! Changing one lead by hand: `leads set`, `tag`, `untag`, `promote`, `suppress`,
//! `unsuppress`. Each change is one store batch: the lead, a journal event, and the mark that
//! makes the daemon's enrollment pass look at the lead again. A command that would change
//! nothing writes nothing and says so.

use chrono::{DateTime, Utc};

use super::view::{find_lead, store_error};
use crate::cli::CliError;
use crate::engine::{ExitReason, Status};
use crate::lead::{Lead, Stage, Suppression, SuppressionReason, Value};
use crate::leads_file::MAX_CELL;
use crate::store::{Batch, EventKind, Store};

/// What a command did, for its one line of output.
pub struct Outcome {
    pub message: String,
}

/// Writes `lead` (stamped `updated_at = now`) with `kind` in the journal.
fn write(
    store: &Store,
    mut lead: Lead,
    now: DateTime<Utc>,
    kind: EventKind,
) -> Result<(), CliError> {
    lead.updated_at = now;
    let mut batch = Batch::default();
    batch.event(&lead.email, now, None, kind);
    batch.changed.push(lead.email.clone());
    batch.leads.push(lead);
    store.apply(&batch).map_err(store_error)?;
    store.flush().map_err(store_error)
}

/// The fields `leads set` writes as the text typed; every other field parses its value.
const TEXT_FIELDS: [&str; 5] = ["first_name", "last_name", "company", "source", "timezone"];

/// `leads set EMAIL key=value…`. Built-in text fields keep the value as typed (a company named
/// `007` stays text); `score` must be a whole number; any other key is an attribute whose value
/// is read like a CSV cell (numbers and true/false recognised). An empty value clears the field
/// or removes the attribute.
pub fn set(
    store: &Store,
    email: &str,
    pairs: &[String],
    now: DateTime<Utc>,
) -> Result<Outcome, CliError> {
    let mut lead = find_lead(store, email)?;
    let before = lead.clone();
    let mut fields: Vec<String> = Vec::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("`{pair}` is not key=value")))?;
        let key = key.trim().to_lowercase().replace([' ', '-'], "_");
        let value = value.trim();
        match key.as_str() {
            "" => return Err(CliError::Usage(format!("`{pair}` has no key before `=`"))),
            // Stage only moves forward, and suppression has its own journal events.
            "stage" => {
                return Err(CliError::Usage(
                    "use `nurture leads promote` to change the stage".into(),
                ));
            }
            "suppression" | "suppressed" => {
                return Err(CliError::Usage(
                    "use `nurture leads suppress` or `unsuppress`".into(),
                ));
            }
            _ => {}
        }
        // The same limit as a file's cell: what `leads list` and `show` are built to show.
        if value.len() > MAX_CELL {
            return Err(CliError::Usage(format!(
                "{key}: the value holds more than 64 KiB; a value may hold at most 64 KiB"
            )));
        }
        if value.is_empty() {
            clear(&mut lead, &key)?;
        } else {
            let value = if TEXT_FIELDS.contains(&key.as_str()) {
                Value::Text(value.to_string())
            } else {
                Value::from_cell(value)
            };
            lead.set_field(&key, value)
                .map_err(|e| CliError::Usage(format!("{key}: {e}")))?;
        }
        if lead.field(&key) != before.field(&key) && !fields.contains(&key) {
            fields.push(key);
        }
    }
    if fields.is_empty() {
        return Ok(Outcome {
            message: format!("{}: nothing changed", lead.email),
        });
    }
    let message = format!("{}: changed {}", lead.email, fields.join(", "));
    let kind = EventKind::Updated {
        by: "nurture leads set".into(),
        fields,
    };
    write(store, lead, now, kind)?;
    Ok(Outcome { message })
}

fn clear(lead: &mut Lead, key: &str) -> Result<(), CliError> {
    match key {
        "first_name" => lead.first_name = None,
        "last_name" => lead.last_name = None,
        "company" => lead.company = None,
        "source" => lead.source = None,
        "timezone" => lead.timezone = None,
        "score" => return Err(CliError::Usage("score must be a whole number".into())),
        // The other built-in names refuse any value; let set_field say why.
        "email" | "tags" | "name" => {
            lead.set_field(key, Value::Text(String::new()))
                .map_err(|e| CliError::Usage(format!("{key}: {e}")))?;
        }
        attribute => {
            lead.attributes.remove(attribute);
        }
    }
    Ok(())
}

/// `leads tag` (`add`) and `leads untag`.
pub fn tags(
    store: &Store,
    email: &str,
    tags: &[String],
    add: bool,
    now: DateTime<Utc>,
) -> Result<Outcome, CliError> {
    let mut lead = find_lead(store, email)?;
    let mut changed = Vec::new();
    for tag in tags.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        let did = if add {
            lead.tags.insert(tag.to_string())
        } else {
            lead.tags.remove(tag)
        };
        if did {
            changed.push(tag.to_string());
        }
    }
    let verb = if add { "tagged" } else { "untagged" };
    if changed.is_empty() {
        return Ok(Outcome {
            message: format!("{}: nothing changed", lead.email),
        });
    }
    let message = format!("{}: {verb} {}", lead.email, changed.join(", "));
    let by = if add {
        "nurture leads tag"
    } else {
        "nurture leads untag"
    };
    let kind = EventKind::Updated {
        by: by.into(),
        fields: vec!["tags".into()],
    };
    write(store, lead, now, kind)?;
    Ok(Outcome { message })
}

/// `leads promote`: only ever upward.
pub fn promote(
    store: &Store,
    email: &str,
    stage: Stage,
    now: DateTime<Utc>,
) -> Result<Outcome, CliError> {
    let mut lead = find_lead(store, email)?;
    if !lead.promote(stage) {
        return Ok(Outcome {
            message: format!(
                "{} is already a {}; promotion only moves forward (lead → contact → customer), so nothing changed",
                lead.email, lead.stage
            ),
        });
    }
    let message = format!("{}: promoted to {stage}", lead.email);
    let kind = EventKind::Promoted {
        stage,
        by: "by hand".into(),
    };
    write(store, lead, now, kind)?;
    Ok(Outcome { message })
}

/// `leads suppress`: the address is never mailed again, and every active enrollment of the lead
/// ends in the same transaction, so the daemon cannot send one more step.
pub fn suppress(
    store: &Store,
    email: &str,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Outcome, CliError> {
    let mut lead = find_lead(store, email)?;
    if let Some(existing) = &lead.suppression {
        return Ok(Outcome {
            message: format!(
                "{} is already suppressed ({}) since {}; nothing changed",
                lead.email,
                existing.detail,
                super::view::when(existing.at)
            ),
        });
    }
    let detail = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or("by hand")
        .to_string();
    lead.suppression = Some(Suppression {
        reason: SuppressionReason::Manual,
        detail: detail.clone(),
        at: now,
    });
    lead.updated_at = now;
    let mut batch = Batch::default();
    batch.event(
        &lead.email,
        now,
        None,
        EventKind::Suppressed { reason: detail },
    );
    let mut ended = Vec::new();
    for mut enrollment in store.enrollments_of(&lead.email).map_err(store_error)? {
        if !enrollment.is_active() {
            continue;
        }
        enrollment.status = Status::Exited(ExitReason::Suppressed);
        enrollment.due = None;
        enrollment.updated_at = now;
        let kind = EventKind::Exited {
            reason: ExitReason::Suppressed,
        };
        batch.event(&lead.email, now, Some(&enrollment.workflow), kind);
        ended.push(enrollment.workflow.clone());
        batch.enrollments.push(enrollment);
    }
    let mut message = format!("{}: suppressed", lead.email);
    if !ended.is_empty() {
        message.push_str(&format!(
            "; ended {} active enrollment{} ({})",
            ended.len(),
            crate::cli::check::plural(ended.len()),
            ended.join(", ")
        ));
    }
    batch.changed.push(lead.email.clone());
    batch.leads.push(lead);
    store.apply(&batch).map_err(store_error)?;
    store.flush().map_err(store_error)?;
    Ok(Outcome { message })
}

/// `leads unsuppress`: the address may be mailed again. Enrollments that ended stay ended; the
/// daemon may enroll the lead anew where a workflow's rules match.
pub fn unsuppress(store: &Store, email: &str, now: DateTime<Utc>) -> Result<Outcome, CliError> {
    let mut lead = find_lead(store, email)?;
    if lead.suppression.take().is_none() {
        return Ok(Outcome {
            message: format!("{} is not suppressed; nothing changed", lead.email),
        });
    }
    let message = format!(
        "{}: no longer suppressed (enrollments that ended stay ended)",
        lead.email
    );
    write(store, lead, now, EventKind::Unsuppressed)?;
    Ok(Outcome { message })
}
