//! Upload: the tested image goes to the final registry under its temporary tags only.
//! The image moves once, through the copy engine, under the first temporary tag; the
//! others are the same manifest bytes put again (no blob moves). Every temporary tag is
//! then read back and must name the copied digest.

use super::location::RepoLocation;
use super::remote;
use super::PublishError;
use crate::client::RegistryClient;
use crate::copy::{Copier, CopyReport, Endpoint};
use crate::reference::{Digest, Reference, Tag};

/// Copies `src` to `repo` under each of `temp_tags`; returns the copy report and the
/// digest every temporary tag now names.
pub async fn upload(
    copier: &Copier,
    src: &Endpoint,
    client: &RegistryClient,
    repo: &RepoLocation,
    temp_tags: &[Tag],
) -> Result<(CopyReport, Digest), PublishError> {
    let (first, rest) = temp_tags
        .split_first()
        .ok_or_else(|| PublishError::Usage("no tag to upload".into()))?;
    let dst = Endpoint::Registry {
        client: client.clone(),
        repo: repo.name.clone(),
        reference: Some(Reference::Tag(first.clone())),
    };
    let report = copier.copy(src, &dst).await.map_err(|e| PublishError::Registry(e.to_string()))?;
    let digest = Digest::parse(&report.digest)
        .map_err(|_| PublishError::Registry(format!("the copy reported an invalid digest {:?}", report.digest)))?;
    let manifest = client
        .get_manifest(&repo.name, &Reference::Digest(digest.clone()))
        .await
        .map_err(|e| PublishError::Registry(e.to_string()))?;
    for tag in rest {
        client
            .put_manifest(&repo.name, &Reference::Tag(tag.clone()), &manifest.bytes, &manifest.media_type)
            .await
            .map_err(|e| PublishError::Registry(e.to_string()))?;
    }
    for tag in temp_tags {
        match remote::resolve(client, &repo.name, tag).await? {
            Some(d) if d == digest => {}
            other => {
                return Err(PublishError::Mismatch(format!(
                    "{repo}:{tag} names {} after the upload, not {digest}",
                    other.map_or("nothing".to_owned(), |d| d.to_string())
                )))
            }
        }
    }
    Ok((report, digest))
}
