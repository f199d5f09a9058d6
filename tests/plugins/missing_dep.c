/* The dependency of the TP_MISSING_DEP test plugin; never on its search path. */
int hm_test_missing_dependency_function(void);
__attribute__((visibility("default"))) int hm_test_missing_dependency_function(void) { return 42; }
