//! The test environment of `fake_cylance`, bound to this package's binary.
//!
//! Only the root package's tests learn where Cargo put the binary
//! (`CARGO_BIN_EXE_cylance-logs`), so the crate's `TestEnv` takes its path;
//! this wrapper passes it once, and derefs to the crate's type for everything
//! else, so tests write `TestEnv::new()`.

use std::ops::Deref;
use std::path::Path;

pub use fake_cylance::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_cylance-logs");

pub struct TestEnv(fake_cylance::TestEnv);

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv(fake_cylance::TestEnv::new(Path::new(BIN)))
    }

    pub fn with_credentials(creds: Credentials) -> TestEnv {
        TestEnv(fake_cylance::TestEnv::with_credentials(
            Path::new(BIN),
            creds,
        ))
    }
}

impl Deref for TestEnv {
    type Target = fake_cylance::TestEnv;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}
