print("memwal")
