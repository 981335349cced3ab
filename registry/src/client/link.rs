//! RFC 8288 `Link` headers, as the tag and catalog listings paginate:
//! `</v2/app/tags/list?last=b&n=2>; rel="next"`.

/// The target of the first `rel="next"` link among the header values.
pub fn next_link<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    for value in values {
        for link in split_links(value) {
            let link = link.trim();
            let Some(rest) = link.strip_prefix('<') else { continue };
            let Some(end) = rest.find('>') else { continue };
            let target = &rest[..end];
            let is_next = rest[end + 1..].split(';').any(|p| {
                let p = p.trim();
                let Some((k, v)) = p.split_once('=') else { return false };
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim().trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next"))
            });
            if is_next {
                return Some(target.to_owned());
            }
        }
    }
    None
}

/// Splits on commas outside `<...>` and quotes (URLs may hold commas).
fn split_links(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut in_url, mut in_quote) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            '<' if !in_quote => in_url = true,
            '>' if !in_quote => in_url = false,
            '"' if !in_url => in_quote = !in_quote,
            ',' if !in_url && !in_quote => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::next_link;

    #[test]
    fn distribution_style() {
        assert_eq!(
            next_link([r#"</v2/app/tags/list?last=b&n=2>; rel="next""#]).as_deref(),
            Some("/v2/app/tags/list?last=b&n=2")
        );
    }

    #[test]
    fn several_links_and_unquoted_rel() {
        let v = r#"<https://r/v2/x/tags/list?n=1,2>; rel=prev, <https://r/v2/x/tags/list?last=c>;rel=next"#;
        assert_eq!(next_link([v]).as_deref(), Some("https://r/v2/x/tags/list?last=c"));
        assert_eq!(next_link(["<a>; rel=\"prev\"", "<b>; title=\"x, y\"; rel=\"next last\""]).as_deref(), Some("b"));
    }

    #[test]
    fn none_without_next() {
        assert_eq!(next_link(["<a>; rel=\"prev\""]), None);
        assert_eq!(next_link(["garbage"]), None);
        assert_eq!(next_link(Vec::<&str>::new()), None);
    }
}
