//! Secrets in a plugin's `config`: given by reference only (`<name>_file` or `<name>_env`),
//! never inline, so that `providers.toml` can be shared and logged. Read once, at init.

use std::path::Path;

use crate::error::Error;

/// The secret at `at` (a key path such as `providers.acme`), from the file named by its
/// `(file_key, file)` or the environment variable named by its `(env_key, env)`; `None` when
/// neither is given. A table that gives both is refused. Errors name the key and the file or
/// variable, never a value.
pub fn read(
    at: &str,
    (file_key, file): (&str, Option<&Path>),
    (env_key, env): (&str, Option<&str>),
) -> Result<Option<String>, Error> {
    match (file, env) {
        (Some(_), Some(_)) => Err(Error::msg(format!(
            "{at}.{file_key}: give either {file_key} or {env_key}, not both"
        ))),
        (Some(path), None) => std::fs::read_to_string(path).map(Some).map_err(|e| {
            Error::msg(format!(
                "{at}.{file_key}: cannot read {}: {e}",
                path.display()
            ))
        }),
        (None, Some(name)) => std::env::var(name).map(Some).map_err(|_| {
            Error::msg(format!(
                "{at}.{env_key}: environment variable {name} is not set"
            ))
        }),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key_and_the_reference_never_a_value() {
        let unset = read(
            "providers.demo",
            ("secret_file", None),
            ("secret_env", Some("XSIGATE_SDK_TEST_UNSET")),
        )
        .unwrap_err()
        .to_string();
        assert!(unset.contains("providers.demo.secret_env"), "{unset}");
        assert!(unset.contains("XSIGATE_SDK_TEST_UNSET"), "{unset}");
        let both = read(
            "providers.demo",
            ("secret_file", Some(Path::new("/nonexistent"))),
            ("secret_env", Some("X")),
        )
        .unwrap_err()
        .to_string();
        assert!(both.contains("not both"), "{both}");
        assert_eq!(read("p", ("f", None), ("e", None)).unwrap(), None);
    }

    #[test]
    fn a_file_is_read_whole() {
        let dir = std::env::temp_dir().join(format!("xsigate-sdk-secret-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\n").unwrap();
        let read = read("p", ("f", Some(&dir)), ("e", None)).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(read.as_deref(), Some("s3cret\n"));
    }
}
