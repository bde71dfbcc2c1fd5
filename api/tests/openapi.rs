//! The committed OpenAPI document (`docs/openapi.json`) is the one the code generates.
//! After changing a route: `cargo run -- openapi > docs/openapi.json`.

#[test]
fn committed_openapi_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    let committed = std::fs::read_to_string(path).expect("docs/openapi.json");
    let generated = api::openapi().to_pretty_json().expect("serialise");
    assert!(
        committed.trim_end() == generated.trim_end(),
        "docs/openapi.json is out of date: run `cargo run -- openapi > docs/openapi.json`"
    );
}

#[test]
fn every_operation_is_tagged_with_its_role() {
    let doc = api::openapi();
    for (path, item) in &doc.paths.paths {
        for op in [&item.get, &item.post, &item.put, &item.delete]
            .into_iter()
            .flatten()
        {
            let tags = op.tags.clone().unwrap_or_default();
            assert_eq!(tags.len(), 1, "{path} names one role tag");
            if path.starts_with("/v1/") {
                assert!(
                    ["admin", "billing", "audit"].contains(&tags[0].as_str()),
                    "{path} is tagged {tags:?}"
                );
            }
        }
    }
}
