//! Passwords and keys from outside the configuration: the first line of a file (a mounted
//! secret) or an environment variable, never a setting, so a config file can be shared and
//! logged. A [`Secret`] never prints its value.

use std::fmt;

/// A value that must not reach a log line or a `Debug` dump.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The secret of `section` (`smtp`, `imap`…): the first line of `file`, or the value of the
/// variable named `variable`; `None` when neither is set. Both set, an unreadable file, an
/// unset variable or an empty value are errors naming the setting, never the value.
pub fn read(section: &str, file: &str, variable: &str) -> Result<Option<Secret>, String> {
    let value = match (file.is_empty(), variable.is_empty()) {
        (true, true) => return Ok(None),
        (false, false) => {
            return Err(format!(
                "{section}.password_file and {section}.password_env are both set: keep one"
            ));
        }
        (false, true) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("{section}.password_file {file}: {e}"))?;
            text.lines().next().unwrap_or_default().to_owned()
        }
        (true, false) => std::env::var(variable).map_err(|_| {
            format!("{section}.password_env: the environment variable {variable} is not set")
        })?,
    };
    if value.is_empty() {
        return Err(format!("the {section} password is empty"));
    }
    Ok(Some(Secret(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_comes_from_a_file_or_a_variable_and_never_prints() {
        let file = std::env::temp_dir().join(format!("nurture-secret-{}", std::process::id()));
        std::fs::write(&file, "s3cret-pw\nignored\n").unwrap();
        let secret = read("smtp", &file.display().to_string(), "")
            .unwrap()
            .unwrap();
        assert_eq!(secret.expose(), "s3cret-pw");
        assert_eq!(format!("{secret:?}"), "Secret(…)");
        std::fs::remove_file(&file).unwrap();

        let unset = read("imap", "", "NURTURE_TEST_SURELY_UNSET_PASSWORD").unwrap_err();
        assert!(unset.contains("imap.password_env"), "{unset}");
        assert!(read("smtp", "", "").unwrap().is_none());
        assert!(read("smtp", "a", "b").unwrap_err().contains("both set"));
    }
}
