fn main() -> std::process::ExitCode {
    drop_db::run(std::env::args_os()).into()
}
