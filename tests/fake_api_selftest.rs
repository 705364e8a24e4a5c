#[path = "support/fake_api.rs"]
mod fake_api;
