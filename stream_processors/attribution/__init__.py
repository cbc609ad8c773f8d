"""Attribution: pure functions that split a conversion's credit over the touches before it."""
