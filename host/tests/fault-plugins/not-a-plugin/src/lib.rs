#[no_mangle] pub extern "C" fn not_a_plugin() -> i32 { 7 }
