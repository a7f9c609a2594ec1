fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(restore_db::run(std::env::args_os()))
}
