//! Operators of the gateway (issue [operator]): their accounts' passwords. The admin listener,
//! its sessions and the status page are to come here too.

pub mod password;
