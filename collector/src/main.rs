fn main() -> std::process::ExitCode {
    vigia_collector::cli::main(std::env::args_os())
}
