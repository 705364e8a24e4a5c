//! The binary: everything lives in the library, so tests, the demo and the
//! man-page generator reach the same code.

fn main() -> std::process::ExitCode {
    cylance_logs::main_with_args(std::env::args_os())
}
