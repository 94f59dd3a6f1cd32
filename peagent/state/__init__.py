"""Machine state: who the new OS is told it is, captured from the old OS and given by the task.

See peagent.state.model for the data, spec for the task's section, capture_windows and
capture_linux for reading an old OS, merge for combining them, the writers (unattend,
sysprep_inf, windows_target, linux_target) for the new OS, record for the deployment record,
and apply for the mounting around all of it.
"""
