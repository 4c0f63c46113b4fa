//! The control socket's frames: JSON, one object a line, in both directions.
//!
//! A command sends a [`Hello`] first: the protocol [`VERSION`] and what it asks for. A
//! [`Request::Run`] is answered by the command's output, [`Reply::Out`] and [`Reply::Err`] lines
//! in the order it wrote them, and one [`Reply::Exit`] last. A [`Request::Import`] is followed
//! by [`Chunk::Leads`] frames and one [`Chunk::End`]; the daemon answers each chunk, once it is
//! written, with [`Reply::Imported`] (the counts so far), and the end with [`Reply::Exit`].
//! Anything else (a closed connection before `Exit`, a line that does not parse) is an error.
//!
//! A daemon that does not speak the command's version answers `Exit` with an error saying so;
//! the version changes whenever a frame's meaning does.

use std::io::{BufRead, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cli::leads::import::{Counts, ImportOptions};
use crate::cli::session::StoreCommand;
use crate::cli::{CliError, ExitCode};
use crate::lead::Lead;
use crate::leads_file::FileLead;

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// The first line a command sends.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub request: Request,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Run a store command in the daemon; its output streams back.
    Run(StoreCommand),
    /// An import of the leads file `file` (its name, for the journal): [`Chunk`]s follow.
    Import {
        file: String,
        options: ImportOptions,
    },
    /// A consistent snapshot of the store, in the backup format (`crate::store::backup`).
    Backup,
}

/// What follows an import's [`Hello`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chunk {
    /// Good leads from the file, in file order (the command reports the rejected rows itself).
    Leads(Vec<WireLead>),
    /// The file is read: make the import durable and answer.
    End,
}

/// A lead read from a file, as it travels.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireLead {
    pub lead: Lead,
    pub score_set: bool,
    pub stage_set: bool,
}

impl From<FileLead> for WireLead {
    fn from(row: FileLead) -> WireLead {
        WireLead {
            lead: row.lead,
            score_set: row.score_set,
            stage_set: row.stage_set,
        }
    }
}

impl From<WireLead> for FileLead {
    fn from(row: WireLead) -> FileLead {
        FileLead {
            lead: row.lead,
            score_set: row.score_set,
            stage_set: row.stage_set,
        }
    }
}

/// What the daemon sends back.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Text the command wrote to its standard output.
    Out(String),
    /// Text the command wrote to its standard error.
    Err(String),
    /// An import chunk is written: the counts so far.
    Imported(Counts),
    /// The command is over: its exit code, and the error it stopped on.
    Exit { code: i32, error: Option<String> },
}

impl Reply {
    /// The last frame for a command's result.
    pub fn exit(result: Result<ExitCode, CliError>) -> Reply {
        match result {
            Ok(code) => Reply::Exit {
                code: code as i32,
                error: None,
            },
            Err(error) => Reply::Exit {
                code: error.exit_code() as i32,
                error: Some(error.to_string()),
            },
        }
    }

    /// An error the daemon met, not the command (it is stopping, a frame did not parse).
    pub fn failed(message: impl Into<String>) -> Reply {
        Reply::Exit {
            code: ExitCode::Input as i32,
            error: Some(message.into()),
        }
    }
}

/// The command's result an `Exit` frame carries.
pub fn result(code: i32, error: Option<String>) -> Result<ExitCode, CliError> {
    match (code, error) {
        (0, None) => Ok(ExitCode::Success),
        (1, error) => Err(CliError::Invalid(error.unwrap_or_default())),
        (2, error) => Err(CliError::Usage(error.unwrap_or_default())),
        (_, error) => Err(CliError::Input(error.unwrap_or_else(|| {
            format!("the daemon ended the command with exit code {code}")
        }))),
    }
}

/// One frame as a line.
pub fn line<T: Serialize>(frame: &T) -> Vec<u8> {
    // Our own plain data types always serialize to JSON.
    let mut bytes = serde_json::to_vec(frame).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Writes one frame (the command's side).
pub fn send<T: Serialize>(out: &mut impl Write, frame: &T) -> std::io::Result<()> {
    out.write_all(&line(frame))
}

/// Reads one frame; `None` when the other side closed the connection.
pub fn receive<T: DeserializeOwned>(input: &mut impl BufRead) -> std::io::Result<Option<T>> {
    let mut text = String::new();
    if input.read_line(&mut text)? == 0 {
        return Ok(None);
    }
    parse(&text).map(Some)
}

/// A frame from its line.
pub fn parse<T: DeserializeOwned>(text: &str) -> std::io::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a control frame does not parse: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_frame_carries_the_commands_exit_code_and_error() {
        for error in [
            CliError::Invalid("bad workflow".into()),
            CliError::Usage("`x` is not key=value".into()),
            CliError::Input("no lead `a@b.test` in the store".into()),
        ] {
            let expected = (error.exit_code(), error.to_string());
            let Reply::Exit { code, error } =
                parse(std::str::from_utf8(&line(&Reply::exit(Err(error)))).unwrap()).unwrap()
            else {
                panic!("not an exit frame")
            };
            let back = result(code, error).unwrap_err();
            assert_eq!((back.exit_code(), back.to_string()), expected);
        }
        assert_eq!(
            result(0, None).unwrap(),
            ExitCode::Success,
            "success has no error"
        );
    }

    #[test]
    fn a_lead_travels_with_what_its_row_set() {
        let mut lead = Lead::new("Dana.Scully@example.test".into(), chrono::Utc::now());
        lead.attributes
            .insert("plan".into(), crate::lead::Value::Text("007".into()));
        lead.attributes
            .insert("seats".into(), crate::lead::Value::Number(12.0));
        let row = FileLead {
            lead,
            score_set: true,
            stage_set: false,
        };
        let frame = line(&Chunk::Leads(vec![WireLead::from(row.clone())]));
        let Chunk::Leads(mut leads) = parse(std::str::from_utf8(&frame).unwrap()).unwrap() else {
            panic!("not a chunk of leads")
        };
        assert_eq!(FileLead::from(leads.remove(0)), row);
    }
}
