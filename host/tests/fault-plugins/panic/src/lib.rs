fault_common::fault_plugin!("panic", Panics { fn on_admit(&self) { panic!("injected fault: admit panicked") } });
