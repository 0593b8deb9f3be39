//! The browser entry point: mounts the app on the page's body.
fn main() {
    kite_frontend::start();
}
