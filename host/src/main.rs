use std::process::ExitCode;

fn main() -> ExitCode {
    nanohost::device::prefer_cublas_without_workspace();
    tracing_subscriber::fmt()
        .with_env_filter(
            // NANOHOST_LOG, else the RUST_LOG every tracing user knows, else info.
            tracing_subscriber::EnvFilter::try_from_env("NANOHOST_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match nanohost::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
