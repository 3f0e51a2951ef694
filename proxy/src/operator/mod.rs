//! The operator console (issue [operator]).
