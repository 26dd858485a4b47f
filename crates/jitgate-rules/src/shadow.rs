//! Shadowing analysis: routes that can never match because an earlier route covers them.
