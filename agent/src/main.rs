//! `vigia-agent`: the whole command line lives in [`vigia_agent::cli`].
fn main() -> std::process::ExitCode {
    vigia_agent::cli::main(std::env::args_os())
}
