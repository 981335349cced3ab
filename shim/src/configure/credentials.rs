//! Credentials for `docker push` to the buildset registry without a plaintext password in
//! `config.json`: the buildset credentials go to the store of `docker-credential-specreg`
//! (0600, owned by the job user so the helper, run by that user's docker CLI, can read it), and
//! `~/.docker/config.json` gets `"credHelpers": {"<buildset host:port>": "specreg"}` (every
//! other key kept; a new file is 0600 and owned by the job user).

use std::path::{Path, PathBuf};

use super::json::{detect_indent, Json};
use super::{fsutil, ConfigureError, FileKind, NewFile, Planner};
use crate::credential_helper::{CredentialStore, HELPER_SUFFIX};

/// `<home>/.docker/config.json`.
pub fn docker_config_path(home: &Path) -> PathBuf {
    home.join(".docker").join("config.json")
}

/// Plans `config.json`: `credHelpers[name] = helper` for each name, everything else kept.
/// A new file is written with tabs, as the docker CLI writes it.
pub fn plan_docker_config(old: Option<&[u8]>, names: &[String], helper: &str) -> Result<Option<Vec<u8>>, String> {
    let mut doc = match old {
        Some(b) if !b.iter().all(u8::is_ascii_whitespace) => Json::parse(b)?,
        _ => Json::Object(Vec::new()),
    };
    if !matches!(doc, Json::Object(_)) {
        return Err(format!("top level is {}, not a JSON object", doc.kind()));
    }
    let mut helpers = match doc.get("credHelpers") {
        None | Some(Json::Null) => Json::Object(Vec::new()),
        Some(h @ Json::Object(_)) => h.clone(),
        Some(other) => return Err(format!("\"credHelpers\" is {}, not an object", other.kind())),
    };
    let mut changed = false;
    for n in names {
        if helpers.get(n) != Some(&Json::String(helper.into())) {
            helpers.set(n, Json::String(helper.into()));
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    doc.set("credHelpers", helpers);
    let indent = old.and_then(detect_indent).unwrap_or_else(|| b"\t".to_vec());
    Ok(Some(doc.to_pretty(&indent)))
}

/// Plans the credential store: the buildset credentials under each of its names, other entries
/// (from `docker login`) kept.
pub fn plan_store(
    old: Option<&[u8]>,
    names: &[String],
    username: &str,
    secret: &super::Secret,
) -> Result<Option<Vec<u8>>, String> {
    let mut store = match old {
        Some(b) => CredentialStore::parse(b)?,
        None => CredentialStore::new(),
    };
    for n in names {
        store.put_secret(n, username, secret);
    }
    let new = store.to_bytes();
    Ok((old != Some(new.as_slice())).then_some(new))
}

pub(super) fn plan(p: &mut Planner) -> Result<(), ConfigureError> {
    let setup = p.setup;
    let names = setup.buildset_names();
    let owner = match &setup.job_user_home {
        Some(home) => {
            let real = setup.under_root(home);
            if !real.is_dir() {
                return Err(ConfigureError::Setup(format!(
                    "job user home {} is not a directory",
                    real.display()
                )));
            }
            Some(fsutil::owner_of(&real)?)
        }
        None => None,
    };
    // The store's directory (a state dir such as /var/lib/specreg) stays root's; the file is the
    // job user's, so that the helper run by that user can read it.
    let private = NewFile {
        mode: 0o600,
        owner,
        dir_mode: 0o755,
        dir_owner: None,
    };
    let store = setup.credential_store.clone();
    p.file(&store, FileKind::CredentialStore, private, |old| {
        plan_store(old, &names, &setup.buildset.username, &setup.buildset.password)
    })?;
    match &setup.job_user_home {
        Some(home) => {
            let opts = NewFile {
                mode: 0o600,
                owner,
                dir_mode: 0o700,
                dir_owner: owner,
            };
            p.file(&docker_config_path(home), FileKind::DockerConfig, opts, |old| {
                plan_docker_config(old, &names, HELPER_SUFFIX)
            })?;
        }
        None => p.warn(
            "no job user home given: ~/.docker/config.json gets no credHelpers entry, so `docker push` to the \
             buildset registry needs `docker login` (which will then use docker-credential-specreg only if configured)",
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_merge() {
        let names = vec!["buildset-registry:5000".to_string(), "10.1.2.3:5000".to_string()];
        let new = plan_docker_config(None, &names, "specreg").unwrap().unwrap();
        assert_eq!(
            String::from_utf8(new.clone()).unwrap(),
            "{\n\t\"credHelpers\": {\n\t\t\"buildset-registry:5000\": \"specreg\",\n\t\t\"10.1.2.3:5000\": \"specreg\"\n\t}\n}\n"
        );
        assert_eq!(plan_docker_config(Some(&new), &names, "specreg").unwrap(), None);
        let old = b"{\n        \"auths\": {\n                \"quay.io\": {\"auth\": \"eDp5\"}\n        },\n        \"credHelpers\": {\"gcr.io\": \"gcloud\"},\n        \"psFormat\": \"table\"\n}";
        let new = String::from_utf8(plan_docker_config(Some(old), &names, "specreg").unwrap().unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&new).unwrap();
        assert_eq!(v["auths"]["quay.io"]["auth"], "eDp5");
        assert_eq!(v["credHelpers"]["gcr.io"], "gcloud");
        assert_eq!(v["credHelpers"]["buildset-registry:5000"], "specreg");
        assert!(
            new.find("auths").unwrap() < new.find("credHelpers").unwrap()
                && new.find("credHelpers").unwrap() < new.find("psFormat").unwrap()
        );
        assert!(new.contains("\n        \"auths\""), "{new}");
        assert!(plan_docker_config(Some(b"{\"credHelpers\": []}"), &names, "specreg")
            .unwrap_err()
            .contains("not an object"));
        assert!(plan_docker_config(Some(b"{"), &names, "specreg")
            .unwrap_err()
            .contains("invalid JSON"));
    }
}
